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

case "$TASK" in  # only the data the task trains on
    det) KIND=coco;; seg) KIND=ade;; *) KIND=all;;
esac
python tools/misc/make_demo_data.py --out "$DATA" --kind "$KIND" ${DEMO_DATA_ARGS:-}

newest_log_dir() {  # the newest <timestamp>/ that mmengine made in a work dir
    ls -d "$1"/[0-9]*_[0-9]*/ 2>/dev/null | sort | tail -n 1 | sed 's#/$##'
}

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
    local ckpt train_logs test_logs
    ckpt=$(cat "$dir/last_checkpoint")
    train_logs=$(newest_log_dir "$dir")
    echo "== evaluating $ckpt and drawing predictions =="
    python tools/test.py "$config" "$ckpt" --work-dir "$dir" --show-dir "$(realpath -m "$dir/predictions")" \
        --cfg-options $data_opts
    test_logs=$(newest_log_dir "$dir")
    echo "== $name done: checkpoint $ckpt, training log in $train_logs/, evaluation log in $test_logs/, pictures in $(realpath -m "$dir/predictions") =="
}

case "$TASK" in
    det|all) run mask_rcnn configs/demo/mask_rcnn_mambaout_demo.py "$@";;&
    seg|all) run upernet configs/demo/upernet_mambaout_demo.py "$@";;
    det) ;;
    *) echo "usage: tools/run_demo.sh [det|seg|all]" >&2; exit 2;;
esac
