#!/bin/bash
# Holds CelebA people out of face training so that a door of 272 people can be
# measured on people the student never saw (#15).
#
#   bench/celeba_hold_out.sh OUT [LFW_VAL]
#
# Writes two folders of links (the data stay where they are):
#   OUT/celeba-train  every CelebA-10k identity except those held out: give it
#                     to `fewshot train distill --extra-train`
#   OUT/door-272      the held-out people: the first 207 CelebA identities (by
#                     name) with 3 or more images, the first 300 with fewer
#                     (strangers), plus every person of LFW_VAL (the LFW
#                     validation people, made by `fewshot split`; 65 of them
#                     have 3 or more images), so that `fewshot door-eval --data
#                     OUT/door-272` enrolls 65 + 207 = 272 people.
set -euo pipefail
OUT=${1:?usage: $0 OUT [LFW_VAL]}
LFW_VAL=${2:-}
DATA=${FEWSHOT_DATA:-../shared/data}
CELEBA=$(cd "$DATA/faces/celeba-10k" && pwd) || {
    echo "no CelebA folder at $DATA/faces/celeba-10k (set FEWSHOT_DATA)" >&2
    exit 1
}
ENROLLED=${ENROLLED:-207}
STRANGERS=${STRANGERS:-300}
for d in "$OUT/celeba-train" "$OUT/door-272"; do
    if [ -e "$d" ] && [ -n "$(ls -A "$d")" ]; then
        echo "$d exists and is not empty" >&2
        exit 1
    fi
    mkdir -p "$d"
done
held=0
many=0
few=0
for dir in "$CELEBA"/*/; do
    name=$(basename "$dir")
    n=$(find "$dir" -maxdepth 1 -type f | wc -l)
    if [ "$n" -ge 3 ] && [ "$many" -lt "$ENROLLED" ]; then
        many=$((many + 1))
        ln -s "$dir" "$OUT/door-272/$name"
        held=$((held + n))
    elif [ "$n" -lt 3 ] && [ "$few" -lt "$STRANGERS" ]; then
        few=$((few + 1))
        ln -s "$dir" "$OUT/door-272/$name"
        held=$((held + n))
    else
        ln -s "$dir" "$OUT/celeba-train/$name"
    fi
done
if [ -n "$LFW_VAL" ]; then
    for dir in "$LFW_VAL"/*; do
        ln -s "$(readlink -f "$dir")" "$OUT/door-272/lfw-$(basename "$dir")"
    done
fi
echo "held out $many CelebA people with 3+ images and $few with fewer ($held images);" \
    "$(ls "$OUT/celeba-train" | wc -l) identities left for training"
