"""The bottom layer: what every other part of glm-agent speaks.

- `messages`: the conversation (system, user, assistant with tool calls, tool results);
- `events`: what a model streams (text deltas, complete tool calls, done) and what the agent
  loop yields (steps, text, tool calls and results, the final answer, errors);
- `contracts`: `ChatModel`, `Tool`, `ToolSpec`, `ToolContext`, `GenerationSettings`;
- `errors`: `GlmAgentError`, the root of every error the runtime raises on purpose;
- `lazy`: the one helper that imports a `"module:attribute"` on first use;
- `terminal`: making untrusted text safe to print.

This package imports nothing else from glm_agent, and this file imports nothing at all, so
`glm_agent.core.errors` stays as light as it looks.
"""
