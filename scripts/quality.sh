#!/usr/bin/env bash
# quality.sh — regenerate the quality table of docs/QUALITY.md.
#
# Converts the trained tiny-code model (testdata/models/tiny-code) at every
# precision of the table with fm-extract / fm-repack / fm-requant2bit, then runs
# `fm-infer eval --json` on its held-out text for each row, comparing with the
# 16-bit conversion (--compare), and writes the table between the markers of
# docs/QUALITY.md (the prose around it is kept).
#
# Usage: scripts/quality.sh [--chunks N]     (default 32 chunks of 512 tokens)
#
# It first checks the 16/16 conversion against transformers' perplexity on the
# first 16 chunks (reference.json), then makes the table with N chunks per row.
# Environment: OUT (work directory, default out/quality). The binaries are
# built into OUT/bin so that a concurrent `make clean` or rebuild cannot change
# them mid-run.
set -euo pipefail

cd "$(dirname "$0")/.."
CHUNKS=32
while [ $# -gt 0 ]; do
	case "$1" in
	--chunks) CHUNKS="$2"; shift 2 ;;
	*) echo "usage: $0 [--chunks N]" >&2; exit 2 ;;
	esac
done
SRC=testdata/models/tiny-code
TEXT=$SRC/heldout.txt
OUT=${OUT:-out/quality}
BIN=$OUT/bin
DOC=docs/QUALITY.md
CTX=512

mkdir -p "$BIN"
for c in extract repack requant2bit infer; do
	CGO_ENABLED=0 go build -o "$BIN/fm-$c" ./cmd/$c
done

# convert NAME DENSE_BITS EXPERT_BITS: OUT/NAME from the bf16 checkpoint.
convert() {
	"$BIN/fm-extract" "$SRC" "$OUT/$1" --bits "$2" --quiet
	"$BIN/fm-repack" "$SRC" "$OUT/$1" --bits "$3" --quiet
}

echo "converting tiny-code ..." >&2
start=$(date +%s)
convert d16e16 16 16
convert d16e8 16 8
convert d16e4 16 4
convert d16e2rtn 16 2 # fm-repack --bits 2: MLX's min/max rule, no optimization
convert d16e16ls 16 16 # for fm-requant2bit --no-gain-correction
convert d8e16 8 16
convert d4e16 4 16
convert d4e4 4 4
for b in 3 2; do
	"$BIN/fm-requant2bit" "$OUT/d16e16" --bits "$b" --quiet # from the 16-bit experts
	"$BIN/fm-requant2bit" "$OUT/d16e4" --bits "$b" --quiet  # from the 4-bit experts
done
"$BIN/fm-requant2bit" "$OUT/d4e4" --quiet
"$BIN/fm-requant2bit" "$OUT/d16e16ls" --no-gain-correction --quiet
"$BIN/fm-requant2bit" "$OUT/d16e16ls" --bits 3 --no-gain-correction --quiet
echo "conversions: $(($(date +%s) - start))s" >&2

REF=$OUT/d16e16
field() { sed -E 's/.*"'"$1"'":"?([^,"}]*)"?[,}].*/\1/' <<<"$2"; }

ROWS=""
REFPPL=""
# row DENSE EXPERTS K HOW DIR [EVAL FLAGS...]: one table row.
row() {
	local dense=$1 experts=$2 k=$3 how=$4 dir=$5
	shift 5
	local t0 j
	t0=$(date +%s.%N)
	j=$("$BIN/fm-infer" eval --model "$dir" --file "$TEXT" --ctx $CTX --max-chunks "$CHUNKS" --compare "$REF" --json "$@" 2>"$OUT/eval.err") || {
		cat "$OUT/eval.err" >&2
		exit 1
	}
	local ppl kl top1 bytes secs
	ppl=$(field perplexity "$j")
	kl=$(field kl "$j")
	top1=$(field top1 "$j")
	bytes=$(field expert_file_bytes "$j")
	secs=$(field elapsed_s "$j")
	[ -z "$REFPPL" ] && REFPPL=$ppl
	ROWS+=$(awk -v d="$dense" -v e="$experts" -v k="$k" -v h="$how" -v p="$ppl" -v r="$REFPPL" -v kl="$kl" -v t="$top1" -v b="$bytes" -v s="$secs" \
		'BEGIN { printf "| %s | %s | %s | %.1f | %.4f | %+.2f%% | %.4f | %.2f%% | %s | %.0f s |\n", d, e, k, b/1024, p, 100*(p/r-1), kl, 100*t, h, s }')$'\n'
	echo "  $dense / $experts / K=$k: perplexity $ppl, KL $kl, top-1 $top1 (${secs}s)" >&2
}

# The yardstick: transformers' float32 perplexity of the bf16 checkpoint over
# the first 16 chunks of 512 tokens.
REFJSON=$(tr -d ' \n' <"$SRC/reference.json")
TFPPL=$(sed -E 's/.*"ppl":([^,}]*).*/\1/' <<<"$REFJSON")
j=$("$BIN/fm-infer" eval --model "$REF" --file "$TEXT" --ctx 512 --max-chunks 16 --json)
FMPPL=$(field perplexity "$j")
REPRO=$(awk -v a="$FMPPL" -v b="$TFPPL" -v s="$(field elapsed_s "$j")" 'BEGIN { printf "fm %.6f, transformers %.6f: relative difference %+.1e (the bar is 0.5%%); one 16-chunk evaluation took %.1f s", a, b, a/b-1, s }')
echo "reproduction: $REPRO" >&2

echo "evaluating ($CHUNKS chunks of $CTX tokens each) ..." >&2
start=$(date +%s)
row 16 16 4 "reference: \`fm-extract --bits 16\`, \`fm-repack --bits 16\`" "$OUT/d16e16"
row 16 8 4 "\`fm-repack --bits 8\`" "$OUT/d16e8"
row 16 4 4 "\`fm-repack --bits 4\`" "$OUT/d16e4"
row 16 3 4 "\`fm-requant2bit --bits 3\` from the 16-bit experts" "$OUT/d16e16" --3bit
row 16 3 4 "\`fm-requant2bit --bits 3\` from the 4-bit experts" "$OUT/d16e4" --3bit
row 16 3 4 "\`fm-requant2bit --bits 3 --no-gain-correction\` from 16-bit" "$OUT/d16e16ls" --3bit
row 16 2 4 "\`fm-requant2bit\` from the 16-bit experts" "$OUT/d16e16" --2bit
row 16 2 4 "\`fm-requant2bit\` from the 4-bit experts" "$OUT/d16e4" --2bit
row 16 2 4 "\`fm-requant2bit --no-gain-correction\` from 16-bit (plain least squares)" "$OUT/d16e16ls" --2bit
row 16 2 4 "\`fm-repack --bits 2\` (MLX min/max rule, not optimized)" "$OUT/d16e2rtn"
row 8 16 4 "\`fm-extract --bits 8\`" "$OUT/d8e16"
row 4 16 4 "\`fm-extract --bits 4\`" "$OUT/d4e16"
row 4 4 4 "\`fm-extract --bits 4\`, \`fm-repack --bits 4\`" "$OUT/d4e4"
row 4 2 4 "the same, then \`fm-requant2bit\`" "$OUT/d4e4" --2bit
row 16 16 3 "\`--experts-per-token 3\`" "$OUT/d16e16" --experts-per-token 3
row 16 16 2 "\`--experts-per-token 2\`" "$OUT/d16e16" --experts-per-token 2
row 16 2 2 "\`fm-requant2bit\` from 16-bit, \`--experts-per-token 2\`" "$OUT/d16e16" --2bit --experts-per-token 2
evalsecs=$(($(date +%s) - start))
echo "evaluations: ${evalsecs}s" >&2

TABLE=$(
	cat <<EOF
Generated by \`scripts/quality.sh --chunks $CHUNKS\` on $(date -u +%Y-%m-%d) ($(go env GOOS)/$(go env GOARCH), $(nproc) CPUs; the evaluations took ${evalsecs} s in all).

Reproduction of the transformers yardstick (16/16 conversion, first 16 chunks of 512 tokens): $REPRO.

tiny-code, \`heldout.txt\`, first $CHUNKS chunks of $CTX tokens ($((CHUNKS * (CTX - 1))) predictions per row),
every row compared with the 16/16 conversion at K=4. "expert file" is the size of one routed expert's file
(bytes read per expert per token).

| dense bits | expert bits | K | expert file (KiB) | perplexity | Δ perplexity | KL (nats) | top-1 agreement | made with | eval time |
|---|---|---|---|---|---|---|---|---|---|
${ROWS}
EOF
)

# Replace the text between the markers.
awk -v table="$TABLE" '
	/<!-- quality-table:begin -->/ { print; print table; skip = 1; next }
	/<!-- quality-table:end -->/ { skip = 0 }
	!skip { print }
' "$DOC" >"$DOC.tmp"
mv "$DOC.tmp" "$DOC"
echo "wrote the table into $DOC" >&2
