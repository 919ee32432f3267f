#!/usr/bin/env bash
# The whole pipeline on the embedded models, on CPU, as a user would run it (`make demo`):
#   serve the teacher -> generate traces -> eval the teacher -> filter -> eval the untrained student
#   -> train the student on the kept traces -> eval the trained student.
# Every model is evaluated on two held-out splits: `builtin` (new numbers in the train split's stories) and
# `builtin-unseen` (stories the train split never uses: does the reasoning carry over?).
# Knobs (environment): RUN (output folder), PROMPTS, SAMPLES, MAX_TOKENS, EVAL_PROMPTS, EPOCHS, PORT,
# SYSTEM_PROMPT (the teacher's system message when it writes traces; the trained student is evaluated with it).
set -euo pipefail

RUN=${RUN:-runs/demo}
PROMPTS=${PROMPTS:-160}
SAMPLES=${SAMPLES:-4}
MAX_TOKENS=${MAX_TOKENS:-1024}
EVAL_PROMPTS=${EVAL_PROMPTS:-150}
EPOCHS=${EPOCHS:-1}  # one pass over the kept traces: ~45 steps of ~20-40 s on 2 cores (the tiny recipe says 2)
PORT=${PORT:-8311}
SYSTEM_PROMPT=${SYSTEM_PROMPT:-}
# Decontamination fails closed: a benchmark it cannot load is an error unless named here. Offline (the
# Makefile sets HF_HUB_OFFLINE=1) the Hub benchmarks cannot be loaded; GSM8K and the sample set ship in data/.
if [ "${HF_HUB_OFFLINE:-0}" = "1" ]; then
  DECONTAM_SKIP=${DECONTAM_SKIP:-aime24 aime25 math500 gpqa-diamond livecodebench}
fi
mkdir -p "$RUN"
start=$(date +%s)

# Each stage is skipped when its output is already there, so re-running `make demo` after a crash or a
# kill continues where it stopped (generate itself resumes sample by sample).
done_() { [ -f "$1" ]; }

# One teacher server for both generate and the teacher's eval (each vLLM start costs ~80 s on CPU).
if ! done_ "$RUN/gen/summary.json" || ! done_ "$RUN/eval-teacher/results.json" \
   || ! done_ "$RUN/eval-teacher-unseen/results.json" \
   || [ "$(python -c "import json;s=json.load(open('$RUN/gen/summary.json'));print(int(bool(s['failed'] or s.get('interrupted'))))")" != "0" ]; then
  distill serve --model embedded:teacher --port "$PORT" >"$RUN/serve-teacher.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
  echo "[demo] waiting for the teacher server on port $PORT (log: $RUN/serve-teacher.log)"
  until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; do
    kill -0 $server 2>/dev/null || { echo "[demo] the teacher server died:"; tail -20 "$RUN/serve-teacher.log"; exit 1; }
    sleep 2
  done
  distill generate --server-url "http://127.0.0.1:$PORT" --output "$RUN/gen" \
    --num-prompts "$PROMPTS" --num-samples "$SAMPLES" --max-tokens "$MAX_TOKENS" --system-prompt "$SYSTEM_PROMPT"
  done_ "$RUN/eval-teacher/results.json" ||
    distill eval --server-url "http://127.0.0.1:$PORT" --model embedded:teacher --output "$RUN/eval-teacher" \
      --num-prompts "$EVAL_PROMPTS" --max-tokens "$MAX_TOKENS"
  done_ "$RUN/eval-teacher-unseen/results.json" ||
    distill eval --server-url "http://127.0.0.1:$PORT" --model embedded:teacher --tasks builtin-unseen \
      --output "$RUN/eval-teacher-unseen" --num-prompts "$EVAL_PROMPTS" --max-tokens "$MAX_TOKENS"
  kill $server; wait $server 2>/dev/null || true
  trap - EXIT
fi

# shellcheck disable=SC2086
done_ "$RUN/filtered/report.json" || distill filter "$RUN/gen" --output "$RUN/filtered" \
  ${DECONTAM_SKIP:+--decontam-skip $DECONTAM_SKIP}
for split in builtin builtin-unseen; do
  suffix=$([ $split = builtin ] && echo "" || echo "-unseen")
  done_ "$RUN/eval-student-before$suffix/results.json" ||
    distill eval --model embedded:student --tasks $split --output "$RUN/eval-student-before$suffix" \
      --num-prompts "$EVAL_PROMPTS" --max-tokens "$MAX_TOKENS"
done
done_ "$RUN/student/train_metrics.json" || distill train --size tiny --data "$RUN/filtered" --output "$RUN/student" \
  --set num_train_epochs="$EPOCHS"
for split in builtin builtin-unseen; do
  suffix=$([ $split = builtin ] && echo "" || echo "-unseen")
  done_ "$RUN/eval-student-after$suffix/results.json" ||
    distill eval --model "$RUN/student" --tasks $split --output "$RUN/eval-student-after$suffix" \
      --num-prompts "$EVAL_PROMPTS" --max-tokens "$MAX_TOKENS"
done

python - "$RUN" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
run, seconds = sys.argv[1], int(sys.argv[2])
load = lambda p: json.load(open(f"{run}/{p}"))
gen, rep = load("gen/summary.json"), load("filtered/report.json")
res = {(w, s): load(f"eval-{w}{s}/results.json") for w in ("teacher", "student-before", "student-after") for s in ("", "-unseen")}
cell = lambda r: f"{r['pass@1']:.3f} ± {r['pass@1_stderr']:.3f} ({r['correct']}/{r['n']})"
print()
print("=== distill demo ===")
print(f"generation:            {gen['written'] + gen['already_done']} traces, {gen['tokens_per_s']:.0f} generated tokens/s")
print(f"kept traces:           {rep['kept']}/{rep['total']} ({rep['pass_rate']:.1%})")
print(f"{'pass@1 ± stderr':<23}{'builtin (held-out)':<26}builtin-unseen (new stories)")
for name, w in (("teacher", "teacher"), ("student before", "student-before"), ("student after", "student-after")):
    print(f"{name:<23}{cell(res[(w, '')]):<26}{cell(res[(w, '-unseen')])}")
print(f"wall time:             {seconds // 60} min {seconds % 60} s")
b, a = res[("student-before", "")], res[("student-after", "")]
if a["pass@1"] <= b["pass@1"]:
    print("training did not improve the student on this run: try more prompts (PROMPTS) or samples (SAMPLES)")
PY
