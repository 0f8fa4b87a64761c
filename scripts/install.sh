#!/usr/bin/env bash
# Set up glm-agent from this checkout on a Debian/Ubuntu machine: bubblewrap (the sandbox), a
# virtualenv, PyTorch, then the package with the extras you name.
#
# Usage: bash scripts/install.sh [--cpu | --cuda | --torch-index URL] [--venv DIR] [--dry-run] [EXTRAS]
#   --cpu      (default) torch's CPU-only build from https://download.pytorch.org/whl/cpu (about
#              0.2 GB to download); PyPI's torch for Linux x86-64 is the CUDA build (several GB)
#   --cuda     torch from PyPI: the CUDA build on Linux x86-64 (needs an NVIDIA driver to use it)
#   --torch-index URL   torch from another PyTorch wheel index (another CUDA version, ROCm ...)
#   --venv DIR the virtualenv to create or reuse (default: .venv in this checkout)
#   --dry-run  print what would be installed and run, change nothing
#   EXTRAS     comma-separated extras of pyproject.toml (default: embedded,python)
# Then: .venv/bin/glm-agent chat   (or `source .venv/bin/activate`, then `glm-agent chat`)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

cpu_index="https://download.pytorch.org/whl/cpu"
torch_index="$cpu_index"
venv=".venv"
extras="embedded,python"
dry_run=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) torch_index="$cpu_index" ;;
    --cuda) torch_index="" ;;
    --torch-index) torch_index="${2:?--torch-index needs a URL}"; shift ;;
    --venv) venv="${2:?--venv needs a folder}"; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see: bash scripts/install.sh --help)" >&2; exit 2 ;;
    *) extras="$1" ;;
  esac
  shift
done
known_extras="$(extras_of pyproject.toml)"
for extra in ${extras//,/ }; do
  if ! grep -qx "$extra" <<<"$known_extras"; then
    echo "unknown extra '$extra'; pyproject.toml has: $(echo $known_extras | tr ' ' ,)" >&2
    exit 2
  fi
done

# torch first, from the chosen index, at the version pyproject.toml pins; the package install
# below then finds it already satisfied and leaves it alone.
torch_pin="$(grep -o '"torch[=<>~!][^"]*"' pyproject.toml | head -1 | tr -d '"')"
torch_args=("$torch_pin")
[ -z "$torch_index" ] || torch_args+=(--index-url "$torch_index")
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)

if [ -n "$dry_run" ]; then
  command -v bwrap >/dev/null || echo "apt-get install -y bubblewrap"
  [ -x "$venv/bin/python" ] || echo "python3 -m venv $venv"
  echo "${pip[*]} ${torch_args[*]}"
  echo "${pip[*]} -e .[$extras]"
  exit 0
fi

command -v bwrap >/dev/null || apt_install bubblewrap
make_venv "$venv"
# Offline mirrors and firewalled machines cannot reach PyTorch's index: say so and take torch
# from the pip index configured here rather than retrying every package for minutes.
if [ -n "$torch_index" ] && ! reachable "$venv/bin/python" "$torch_index/"; then
  echo "cannot reach $torch_index: installing $torch_pin from your configured pip index instead (on PyPI that is the CUDA build)" >&2
  torch_args=("$torch_pin")
fi
"${pip[@]}" "${torch_args[@]}"
"${pip[@]}" -e ".[$extras]"
echo "glm-agent is installed in $venv: run $venv/bin/glm-agent chat (or: source $venv/bin/activate)"
