# Shell functions shared by scripts/install.sh and scripts/test.sh (sourced, not run).

# Install Debian/Ubuntu packages that are missing; with sudo unless we are root.
apt_install() {
  [ $# -gt 0 ] || return 0
  if ! command -v apt-get >/dev/null; then
    echo "no apt-get here: install these with your package manager, then run again: $*" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Exit status 0 when pip may not install into this interpreter: a distribution's Python marked
# EXTERNALLY-MANAGED (PEP 668: Debian 12, Ubuntu 23.04 and later) and not inside a virtualenv.
externally_managed() {
  "$1" - <<'EOF'
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.isfile(marker) else 1)
EOF
}

# The first of python, python3 on PATH (Debian has only python3 until python-is-python3).
system_python() {
  local candidate
  for candidate in python python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      echo "$candidate"
      return 0
    fi
  done
  echo "Python 3.10 or newer is needed: apt-get install python3 (or use pyenv / uv)" >&2
  return 1
}

# Create the virtualenv DIR unless it exists; Debian's python3 needs python3-venv for it.
make_venv() {
  local dir="$1" python
  [ -x "$dir/bin/python" ] && return 0
  python="$(system_python)" || return 1
  if ! "$python" -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  "$python" -m venv "$dir"
}

# The extras pyproject.toml defines, one a line (the `name = [` keys of its
# [project.optional-dependencies] table).
extras_of() {
  awk '/^\[project.optional-dependencies\]/ { inside = 1; next }
       /^\[/ { inside = 0 }
       inside && /^[A-Za-z0-9_-]+[ \t]*=/ { sub(/[ \t]*=.*/, ""); print }' "$1"
}

# Run pytest with interpreter $1 and the remaining arguments; exit status 5 (no tests collected,
# e.g. a mistyped path or -k) becomes a failure instead of passing unnoticed.
run_pytest() {
  local py="$1" rc=0
  shift
  "$py" -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    return 1
  fi
  return "$rc"
}

# Exit status 0 when URL answers within 10 s (any HTTP status), using interpreter $1.
reachable() {
  "$1" - "$2" <<'EOF_PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError:
    pass  # it answered
except Exception:
    sys.exit(1)
EOF_PY
}
