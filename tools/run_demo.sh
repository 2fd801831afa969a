#!/usr/bin/env bash
# The README's main command: on a fresh machine, set up (once), make the demo data (once),
# then train Mask R-CNN + MambaOut (det, the default) and/or UperNet + MambaOut (seg) on it
# on the CPU, evaluate with the real metrics (COCO bbox/segm mAP via pycocotools, mIoU) and
# draw predictions.
#
# Usage: bash tools/run_demo.sh [det|seg|all] [extra --cfg-options for tools/train.py]
#   DEMO_WORK_DIR (default work_dirs/demo), DEMO_DATA (default data/demo),
#   DEMO_DATA_ARGS (extra tools/misc/make_demo_data.py arguments, e.g. "--num-train 40")
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
TASK=${1:-det}
[ $# -gt 0 ] && shift
WORK=${DEMO_WORK_DIR:-work_dirs/demo}
DATA=${DEMO_DATA:-data/demo}

python tools/misc/make_demo_data.py --out "$DATA" --kind all ${DEMO_DATA_ARGS:-}

run() {  # name config [train.py args]
    local name=$1 config=$2 dir="$WORK/$1"
    local data_opts
    if [ "$name" = mask_rcnn ]; then
        data_opts="train_dataloader.dataset.data_root=$DATA/coco/ val_dataloader.dataset.data_root=$DATA/coco/ test_dataloader.dataset.data_root=$DATA/coco/ val_evaluator.ann_file=$DATA/coco/annotations/instances_val2017.json test_evaluator.ann_file=$DATA/coco/annotations/instances_val2017.json"
    else
        data_opts="train_dataloader.dataset.data_root=$DATA/ade/ADEChallengeData2016 val_dataloader.dataset.data_root=$DATA/ade/ADEChallengeData2016 test_dataloader.dataset.data_root=$DATA/ade/ADEChallengeData2016"
    fi
    echo "== training $config on the CPU =="
    python tools/train.py "$config" --work-dir "$dir" --cfg-options $data_opts "${@:3}"
    local ckpt
    ckpt=$(cat "$dir/last_checkpoint")
    echo "== evaluating $ckpt and drawing predictions =="
    python tools/test.py "$config" "$ckpt" --work-dir "$dir" --show-dir "$(realpath -m "$dir/predictions")" \
        --cfg-options $data_opts
    echo "== $name done: checkpoint $ckpt, logs in $dir/<timestamp>/, pictures in $dir/predictions =="
}

case "$TASK" in
    det|all) run mask_rcnn configs/demo/mask_rcnn_mambaout_demo.py "$@";;&
    seg|all) run upernet configs/demo/upernet_mambaout_demo.py "$@";;
    det) ;;
    *) echo "usage: tools/run_demo.sh [det|seg|all]" >&2; exit 2;;
esac
