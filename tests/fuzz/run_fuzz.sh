#!/usr/bin/env bash
# Builds the readers of outside data as libFuzzer targets with ASan + UBSan (tests/fuzz, a build
# of its own with clang++) and runs each over a seed corpus of real files for a bounded time.
# Usage: run_fuzz.sh SOURCE_DIR BUILD_DIR [SECONDS] [TARGET...]
#   SECONDS: per target (default $DRB_FUZZ_SECONDS or 10); DRB_FUZZ_RUNS=N runs N inputs instead.
#   TARGET: safetensors_header scene gltf track png exr video (default: all).
# Exits non-zero on a finding; the input is left in BUILD_DIR/fuzz/TARGET/ as crash-*, leak-*,
# timeout-* or oom-*. Prints each target's number of executions.
set -euo pipefail
src=$(cd "${1:?source dir}" && pwd)
build=${2:?build dir}
seconds=${3:-${DRB_FUZZ_SECONDS:-10}}
shift $(( $# < 3 ? $# : 3 ))
targets=${*:-safetensors_header scene gltf track png exr video}
CXX=${CLANGXX:-clang++}
mkdir -p "$build/fuzz"
work=$(cd "$build/fuzz" && pwd)

cmake -S "$src/tests/fuzz" -B "$work/build" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" >/dev/null
cmake --build "$work/build"

# Seeds: real files written by derrumbe's writers (make_seeds) and safetensors headers (below).
seeds="$work/seeds"
rm -rf "$seeds"
"$work/build/make_seeds" "$src/examples" "$seeds" >/dev/null
mkdir -p "$seeds/safetensors_header"
python3 - "$seeds/safetensors_header" <<'PY'
import json, os, struct, sys
out = sys.argv[1]
n = 0
def put(data):
    global n
    with open(os.path.join(out, "seed%03d" % n), "wb") as f:
        f.write(data)
    n += 1
def st(tensors, metadata=None, pad=True, data_fill=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
    for name, dtype, shape in tensors:
        count = 1
        for d in shape:
            count *= d
        nbytes = count * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + nbytes]}
        data += bytes([1 if dtype == "BOOL" else (i * 7) % 251 for i in range(nbytes)])
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data
valid = [
    st([("w", "F32", [2, 3])]),
    st([("a", "F16", [4]), ("b", "BF16", [2, 2]), ("c", "I64", []), ("d", "BOOL", [3])], {"format": "pt"}),
    st([("e", "U8", [0, 5]), ("f", "I8", [1]), ("g", "F8_E4M3", [2]), ("h", "F8_E5M2", [2]), ("i", "F64", [1]),
        ("j", "I32", [1]), ("k", "I16", [1])]),
    st([], {"k": "v"}),
    st([("blocks.0.w", "F32", [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])], pad=False),
]
for v in valid:
    put(v)
# Truncated and corrupted variants of a valid file.
v = valid[1]
for cut in (0, 3, 8, 9, 20, len(v) // 2, len(v) - 1):
    put(v[:cut])
put(struct.pack("<Q", 1 << 40) + b"{}")
put(struct.pack("<Q", 2) + b"{}")
put(struct.pack("<Q", 2) + b"[]")
put(struct.pack("<Q", 4) + b'{"":')
put(b"\xff" * 16)
put(struct.pack("<Q", 40) + json.dumps({"w": {"dtype": "F32", "shape": [1e30], "data_offsets": [0, 4]}}).encode()[:40])
bad = {"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]},
       "x": {"dtype": "X9", "shape": [-1], "data_offsets": [0, 1, 2]},
       "__metadata__": {"a": 1, "b": [None, {"c": {}}]}}
t = json.dumps(bad).encode()
put(struct.pack("<Q", len(t)) + t)
t = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
put(struct.pack("<Q", len(t)) + t + b"\x00\x01")
t = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": {"x": [[[[1, 2.5, true, null, "s"]]]]}}}'
put(struct.pack("<Q", len(t)) + t + b"\x00")
# The same files as "header JSON \0 data" (the target's second reading, which sets the length).
for name in sorted(os.listdir(out)):
    b = open(os.path.join(out, name), "rb").read()
    if len(b) >= 8:
        k = struct.unpack("<Q", b[:8])[0]
        if 8 + k <= len(b):
            put(b[8:8 + k] + b"\0" + b[8 + k:])
PY
# Dictionaries: the safetensors header's words, and every key of the example scenes.
cat > "$work/safetensors.dict" <<'DICT'
"dtype"
"shape"
"data_offsets"
"__metadata__"
"F64"
"F32"
"F16"
"BF16"
"I64"
"I32"
"I16"
"I8"
"U8"
"BOOL"
"F8_E4M3"
"F8_E5M2"
"9007199254740993"
"18446744073709551616"
"-1"
"1e300"
"\\u0000"
DICT
python3 - "$src/examples/scenes" > "$work/scene.dict" <<'PY'
import json, os, sys
keys = set()
def walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            keys.add(k)
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
for name in os.listdir(sys.argv[1]):
    walk(json.load(open(os.path.join(sys.argv[1], name))))
for k in sorted(keys):
    print(json.dumps(json.dumps(k)))
PY

limit="-max_total_time=$seconds"
[ -z "${DRB_FUZZ_RUNS:-}" ] || limit="-runs=$DRB_FUZZ_RUNS"
failed=""
for target in $targets; do
  dir="$work/$target"
  mkdir -p "$dir/corpus"
  rm -f "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* "$dir"/slow-unit-*
  dict=""
  [ "$target" != safetensors_header ] || dict="-dict=$work/safetensors.dict"
  [ "$target" != scene ] || dict="-dict=$work/scene.dict"
  status=0
  (cd "$dir" && "$work/build/fuzz_$target" "$limit" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 $dict \
     -artifact_prefix="$dir/" "$dir/corpus" "$seeds/$target" > "$dir/log" 2>&1) || status=$?
  runs=$(grep -o 'number_of_executed_units: [0-9]*' "$dir/log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  if [ "$status" -ne 0 ]; then
    tail -40 "$dir/log" >&2
    echo "fuzz_$target: FINDING (exit status $status) after $runs executions; inputs: $(ls "$dir" | grep -E '^(crash|leak|timeout|oom)-' | tr '\n' ' ')" >&2
    failed="$failed $target"
  else
    echo "fuzz_$target: $runs executions, no finding"
  fi
done
[ -z "$failed" ] || { echo "findings in:$failed" >&2; exit 1; }
