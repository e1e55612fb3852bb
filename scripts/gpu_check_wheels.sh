#!/usr/bin/env bash
# Fill a folder with the wheels the GPU check needs on a machine that cannot download (docs/gpu_check.md).
# Run it here, where pip reaches the package index; the folder then travels with the repository (it is git-ignored):
#
#   bash scripts/gpu_check_wheels.sh                     # -> gpu_check_wheels/ for CPython 3.12, manylinux x86_64
#   bash scripts/gpu_check_wheels.sh DIR --python-version 3.11 --arch aarch64
#
# What it brings: the packages of GPU_CHECK_NEEDS (default: trl datasets bm25s rapidfuzz) and their dependencies,
# minus everything the GPU machine already has, i.e. GPU_CHECK_HAVE (default: torch transformers accelerate peft
# pytest pyarrow) and their dependencies. Both sets are resolved by pip without downloading them (metadata only,
# `pip install --dry-run --report`), at the versions of constraints.txt; the difference is downloaded as wheels
# (--no-deps, --only-binary). The folder gets requirements.txt (the exact pins to install) and manifest.json (sizes).
# It fails when the wheels exceed 64 MiB. gpu_check.sh --wheels DIR installs them with
# `pip install --no-index --find-links DIR --no-deps --target WORK/site -r DIR/requirements.txt`.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=gpu_check_wheels
PYVER=3.12
ARCH=x86_64
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) PYVER="$2"; shift 2 ;;
        --arch) ARCH="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        -*) echo "gpu_check_wheels.sh: unknown option $1" >&2; exit 2 ;;
        *) DIR="$1"; shift ;;
    esac
done
HAVE="${GPU_CHECK_HAVE:-torch transformers accelerate peft pytest pyarrow}"
NEEDS="${GPU_CHECK_NEEDS:-trl datasets bm25s rapidfuzz}"
CONSTRAINTS="${TRL_SDAR_CONSTRAINTS:-constraints.txt}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
ABI="cp${PYVER/./}"
TARGET=(--python-version "$PYVER" --implementation cp --abi "$ABI" --only-binary=:all:
        --platform "manylinux_2_28_$ARCH" --platform "manylinux_2_17_$ARCH" --platform "manylinux2014_$ARCH")
PIN=()
[ "$CONSTRAINTS" = none ] || PIN=(-c "$CONSTRAINTS")

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
resolve() {  # resolve() NAME PACKAGES...: pip's install report for PACKAGES on the target, nothing downloaded
    local name="$1"; shift
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$tmp/$name.json" --target "$tmp/t-$name" \
        "${TARGET[@]}" ${PIN[@]+"${PIN[@]}"} "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
echo "[wheels] resolving for CPython $PYVER manylinux $ARCH: the GPU machine's packages ($HAVE) and with $NEEDS"
# shellcheck disable=SC2086
resolve have $HAVE &
have_pid=$!
# shellcheck disable=SC2086
resolve all $HAVE $NEEDS
wait "$have_pid"

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
"$PY" - "$tmp/have.json" "$tmp/all.json" "$DIR/requirements.txt" <<'EOF'
import json, sys

def installs(path):
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
            for i in json.load(open(path))["install"]}

have, every = installs(sys.argv[1]), installs(sys.argv[2])
bring = sorted((name, version) for name, version in every.items() if name not in have)
changed = sorted(name for name in have if name in every and every[name] != have[name])
if changed:  # the needed packages would move a package the machine has: say so (they are not brought)
    print(f"[wheels] warning: resolving with the needed packages changes {changed}; not brought", file=sys.stderr)
open(sys.argv[3], "w").write("".join(f"{name}=={version}\n" for name, version in bring))
EOF
echo "[wheels] bringing: $(tr '\n' ' ' < "$DIR/requirements.txt")"
"$PY" -m pip download --quiet --no-deps "${TARGET[@]}" -d "$DIR" -r "$DIR/requirements.txt" \
    2> >(grep -v "^WARNING: Location" >&2)
"$PY" - "$DIR" "$PYVER" "$ARCH" <<'EOF'
import json, pathlib, sys

folder, pyver, arch = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
wheels = {p.name: p.stat().st_size for p in sorted(folder.glob("*.whl"))}
total = sum(wheels.values())
manifest = {"python_version": pyver, "platforms": f"manylinux {arch}", "wheels": wheels, "total_bytes": total,
            "limit_bytes": 64 * 2**20, "requirements": folder.joinpath("requirements.txt").read_text().split()}
folder.joinpath("manifest.json").write_text(json.dumps(manifest, indent=1))
for name, size in sorted(wheels.items(), key=lambda kv: -kv[1]):
    print(f"[wheels] {size / 2**20:8.2f} MiB  {name}")
print(f"[wheels] {total / 2**20:8.2f} MiB in {len(wheels)} wheels (limit 64 MiB) in {folder}")
sys.exit(0 if total <= 64 * 2**20 else 1)
EOF
