#!/usr/bin/env bash
# The whole genret path on the embedded defaults: demo corpus -> index -> HTTP search -> KILT eval.
set -euo pipefail
export HF_HUB_OFFLINE=1
OUT=${DEMO_OUT:-demo-out}
PORT=${DEMO_PORT:-8765}
mkdir -p "$OUT"

echo "== 1. demo corpus: Python standard-library docstrings + gold questions"
genret demo-data "$OUT/data"

echo "== 2. index it (every index kind available)"
genret index "$OUT/data/corpus.jsonl" --out "$OUT/index" --force

echo "== 3. serve it on 127.0.0.1:$PORT and search over HTTP"
genret serve "$OUT/index" --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
# /readyz: 200 once every retriever and the generator are loaded and warmed (`/healthz` answers from the start)
for i in $(seq 1 360); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "server died:"; cat "$OUT/server.log"; exit 1; }
  [ "$i" = 360 ] && { echo "server not ready after 180 s:"; tail -5 "$OUT/server.log"; exit 1; }
  sleep 0.5
done
curl -sf -X POST "http://127.0.0.1:$PORT/v1/search" -H 'content-type: application/json' \
  -d '{"query": "How do I serialize an object to a JSON string?", "k": 3}' > "$OUT/search.json"
python3 - "$OUT/search.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("POST /v1/search ->", r["retriever"], "retriever:")
for h in r["hits"]:
    p = h["provenance"]
    print(f"  {h['rank']}. {h['score']:.3f}  {p['title']} (paragraph {p['start_paragraph_id']}): {h['text'][:90]}")
PY

echo "== 4. KILT-style evaluation on the demo questions, one retriever after the other"
# generative: the packaged SmolLM2-135M, untrained (query keys, unigram scores, calibration; ~0.5 s a question on
# one CPU thread); hybrid: the default fusion of every retriever of the index, equal weights (`genret tune` fits
# the members' weights on a dev file and saves them in the index)
for r in dense bm25 generative hybrid; do
  genret eval "$OUT/index" "$OUT/data/questions.jsonl" --retriever $r -k 20 --ks 1,5,10,20 \
    --out "$OUT/predictions.$r.jsonl" --quiet
done
echo "predictions: $OUT/predictions.*.jsonl"

echo "== 5. RAG: answer a question from retrieved passages with the packaged SmolLM2-135M (CPU): a span of a passage, cited"
genret rag "$OUT/index" "Which syntax is JSON a subset of?" --retriever hybrid --hybrid bm25,dense \
  --task qa --passages 3 --max-new-tokens 24
