#!/usr/bin/env bash
# The commands behind benchmarks/conversion-decoder/{results,cost}.{md,json}, from the repository root.
# On the shared 2-core machine each line ran as its own process with one thread (OMP_NUM_THREADS=1), independent lines in parallel.
set -euo pipefail
export PYTHONPATH=$PWD
S=benchmarks/conversion-decoder

# teacher: softmax NaLaForCausalLM, characters, trained on the 30 conversion plays only (8 held-out plays never seen)
python $S/study.py teacher-data runs/convdec/data
nalaformer train lm --data.name runs/convdec/data/conversion_plays.txt --data.tokenizer char --data.block-size 256 \
  --model.mixer softmax --model.hidden-size 128 --model.num-layers 4 --model.num-heads 4 --steps 800 --batch-size 16 \
  --eval-every 400 --checkpoint-every 200 --warmup-steps 50 --no-progress --log-every 20 --run-dir runs/convdec/teacher

# conversions: same budget for every map (100 attention-transfer + 100 LoRA-recovery steps of 8 passages x 256 tokens)
convert() {  # mixer seed
  nalaformer linearize --model runs/convdec/teacher --mixer "$1" --seed "$2" --run-dir "runs/convdec/conv/$1-s$2" \
    --seq-len 256 --words 48 --raw-text --batch-size 8 --transfer-steps 100 --recovery-steps 100 --checkpoint-every 200 \
    --no-progress
  python $S/study.py evaluate "runs/convdec/conv/$1-s$2"
}
convert nala 0; convert elu 0; convert hedgehog 0; convert nala 1; convert nala 2
for seed in 1 2; do convert elu $seed; convert hedgehog $seed; done
for mixer in nala_cosine relu cosformer; do for seed in 0 1 2; do convert $mixer $seed; done; done

# cost: forward time and peak memory at 512-16k tokens, per-token decoding, its peak memory and state bytes (one
# thread; cost.{md,json}), then the report (results.{md,json}: the conversion table, then the cost table)
python $S/decoder_bench.py runs/convdec/teacher --out $S
python $S/study.py report runs/convdec/conv/{nala,nala_cosine,elu,relu,hedgehog,cosformer}-s{0,1,2} --out $S \
  --note "Measured on a 2-core CPU shared with other jobs (one thread per job): absolute times are loaded-machine figures; compare the same-run ratios. In the cost table the state column was read after the timed decoding steps (a few to ~25 tokens past the prompt: the teacher's 512-token cache is 2.01 MiB after the prompt alone); decoder_bench.py now reads it right after the prompt."
