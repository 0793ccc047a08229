#!/usr/bin/env bash
# Builds the Cortex-M4F door (release) and runs it under qemu's mps2-an386
# twice in one folder: the first boot enrolls and decides, the second boots
# on the gallery the first stored (a reset) and decides again; then the face
# encoder alone runs once on a fixed input.
# Usage: mcu/run.sh [FOLDER] (default: a new temporary folder).
# Needs: rustup target thumbv7em-none-eabihf; qemu-system-arm (apt-get install qemu-system-arm);
# the data folder (FEWSHOT_DATA, default ../shared/data beside the repo) for the frames.
set -euo pipefail
cd "$(dirname "$0")"
command -v qemu-system-arm >/dev/null ||
  { echo "mcu/run.sh: qemu-system-arm not found (apt-get install qemu-system-arm)" >&2; exit 1; }
if [ -n "${FEWSHOT_DATA:-}" ]; then export FEWSHOT_DATA="$(cd "$FEWSHOT_DATA" && pwd)"; fi
export CARGO_TARGET_DIR="$PWD/target"
cargo build --release --quiet
elf="$PWD/target/thumbv7em-none-eabihf/release/fewshot-mcu"
dir="${1:-$(mktemp -d)}"
mkdir -p "$dir"
cd "$dir"
rm -f slot0.fsgl slot1.fsgl
qemu() {
  timeout 600 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
    -serial none -semihosting-config enable=on,target=native -icount shift=0 -kernel "$1"
}
for boot in 1 2; do
  echo "== boot $boot"
  qemu "$elf"
done
# The face encoder alone (mcu/src/bin/face_engine.rs).
echo "== face"
qemu "$(dirname "$elf")/face_engine"
