#!/bin/bash
# The whole default-model pipeline, each part resumable: rerun this script after an interruption
# and every part continues where it stopped (finished parts are skipped). Logs go to runs/*.log.
#   nohup training/run_all.sh > runs/run_all.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p runs
python3 training/make_data.py --out data --train 300 --heldout 16 --workers 1 --samples 12 --scale 1 >> runs/data.log 2>&1
# each run stops after 110 minutes with a checkpoint; a part not finished by then stops the script
[ -f runs/vae/vae/config.json ] || python3 training/train_vae.py --data data --out runs/vae >> runs/vae.log 2>&1
[ -f runs/vae/vae/config.json ] || { echo "the VAE run has not finished: rerun"; exit 1; }
# the decoder again on 13-frame windows, the encoder frozen (the latents below stay valid)
[ -f runs/vae_decoder/vae/config.json ] ||
  python3 training/finetune_vae_decoder.py --data data --vae runs/vae/vae --out runs/vae_decoder >> runs/vae_decoder.log 2>&1
[ -f runs/vae_decoder/vae/config.json ] || { echo "the VAE decoder run has not finished: rerun"; exit 1; }
python3 training/encode_latents.py --data data --vae runs/vae/vae --out runs/latents >> runs/latents.log 2>&1
[ -f runs/transformer/transformer/config.json ] ||
  python3 training/train_transformer.py --data data --latents runs/latents --out runs/transformer >> runs/transformer.log 2>&1
[ -f runs/transformer/transformer/config.json ] || { echo "the transformer run has not finished: rerun"; exit 1; }
python3 training/export_model.py --vae runs/vae_decoder/vae --run runs/transformer --latents runs/latents --out assets/default-model
python3 benchmarks/default_model.py --data data --out docs/default-model > runs/benchmark.log 2>&1
