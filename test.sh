#!/usr/bin/env bash
# The project's test command: sets up what the tests need on a fresh machine, once,
# then runs `cargo test --workspace` (extra arguments are passed on to it).
#
# - The second ONNX runtime (onnx, onnxruntime, numpy) goes into a virtual environment
#   at target/ort-venv, made on first use; the tests find it through FEWSHOT_PYTHON.
#   Set FEWSHOT_PYTHON yourself to use another interpreter that has them.
# - Plots need a TrueType font: DejaVu Sans is installed with apt-get when missing
#   and apt-get can be used (as root); otherwise set FEWSHOT_FONT to any .ttf file.
# - The microcontroller door's test needs the thumbv7em-none-eabihf target (added with
#   rustup when missing) and qemu-system-arm (installed with apt-get when missing, as root).
# - The tests read real images from the data folder (FEWSHOT_DATA, default
#   ../shared/data) and fail, saying where they looked, if it is missing.
set -euo pipefail
cd "$(dirname "$0")"

die() {
  printf 'test.sh: %s\n' "$*" >&2
  exit 1
}

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup, stable) first"

# The Python packages of the second runtime.
PY_PACKAGES=(onnx onnxruntime numpy)
has_packages() { "$1" -c 'import onnx, onnxruntime, numpy' >/dev/null 2>&1; }
if [ -z "${FEWSHOT_PYTHON:-}" ]; then
  venv="$PWD/target/ort-venv"
  if ! has_packages "$venv/bin/python"; then
    command -v python3 >/dev/null || die "python3 not found: install Python 3 (with venv and pip)"
    if [ ! -x "$venv/bin/python" ]; then
      echo "test.sh: creating $venv for onnx, onnxruntime and numpy (once)"
      mkdir -p target
      python3 -m venv "$venv" ||
        die "python3 -m venv failed: install Python's venv module (on Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}" ||
      die "pip could not install ${PY_PACKAGES[*]} into $venv"
  fi
  export FEWSHOT_PYTHON="$venv/bin/python"
elif ! has_packages "$FEWSHOT_PYTHON"; then
  die "FEWSHOT_PYTHON=$FEWSHOT_PYTHON cannot import onnx, onnxruntime and numpy"
fi

# A font for the plots.
if [ -z "${FEWSHOT_FONT:-}" ] && [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing fonts-dejavu-core (plots draw their text with DejaVu Sans)"
    (apt-get update -qq && apt-get install -y -qq fonts-dejavu-core) ||
      die "apt-get could not install fonts-dejavu-core: install it or set FEWSHOT_FONT to a .ttf file"
  elif ! find /usr/share/fonts -name '*.ttf' 2>/dev/null | grep -q .; then
    die "no TrueType font found: install fonts-dejavu-core or set FEWSHOT_FONT to a .ttf file"
  fi
fi

# The microcontroller door's test (tests/tests/mcu_qemu.rs) builds mcu/ for a
# Cortex-M4F and runs it under qemu.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -q thumbv7em-none-eabihf; then
  echo "test.sh: adding the Rust target thumbv7em-none-eabihf (the microcontroller door)"
  rustup target add thumbv7em-none-eabihf || die "rustup could not add thumbv7em-none-eabihf"
fi
if ! command -v qemu-system-arm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing qemu-system-arm (the microcontroller door runs under it)"
    (apt-get update -qq && apt-get install -y -qq qemu-system-arm) ||
      die "apt-get could not install qemu-system-arm: install it (the MCU door's test needs it)"
  else
    die "qemu-system-arm not found: install it (on Debian: apt-get install qemu-system-arm)"
  fi
fi

exec cargo test --workspace "$@"
