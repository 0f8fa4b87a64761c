"""`python -m glm_agent`: the `glm-agent` command line."""

from glm_agent.cli import main

if __name__ == "__main__":
    main()
