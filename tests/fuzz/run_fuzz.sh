#!/usr/bin/env bash
# Builds the safetensors header fuzz target with libFuzzer + ASan + UBSan and runs it for a
# bounded time over a seed corpus written here (valid headers, truncated and garbage ones).
# Usage: run_fuzz.sh SOURCE_DIR BUILD_DIR [SECONDS]. Exits non-zero on a finding (the crashing
# input is left in BUILD_DIR/fuzz/ as crash-*, leak-*, timeout-* or oom-*).
set -euo pipefail
src=$(cd "${1:?source dir}" && pwd)
build=${2:?build dir}
seconds=${3:-${DRB_FUZZ_SECONDS:-20}}
CXX=${CLANGXX:-clang++}
work="$build/fuzz"
mkdir -p "$work"
work=$(cd "$work" && pwd)

bin="$work/fuzz_safetensors_header"
"$CXX" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I "$src/include" \
  "$src/src/models/safetensors_header.cpp" "$src/src/core/error.cpp" "$src/tests/fuzz/fuzz_safetensors_header.cpp" \
  -o "$bin"

seeds="$work/seeds"
corpus="$work/corpus"
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus"
python3 - "$seeds" <<'PY'
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

cd "$work"
rm -f crash-* leak-* timeout-* oom-* slow-unit-*
status=0
"$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096 -print_final_stats=1 \
  -dict="$work/safetensors.dict" -artifact_prefix="$work/" "$corpus" "$seeds" || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz_safetensors: finding (exit status $status); inputs: $(ls "$work" | grep -E '^(crash|leak|timeout|oom)-' | tr '\n' ' ')" >&2
  exit 1
fi
echo "fuzz_safetensors: no finding in ${seconds}s"
