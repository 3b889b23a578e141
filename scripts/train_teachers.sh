#!/usr/bin/env bash
# Train jaxgc's own teachers into the user cache folder, where jaxgc.jobs.teachers.teacher()
# finds them: ${JAXGC_CACHE:-~/.cache/jaxgc}/teachers/NAME (a `jaxgc gan` workdir each:
# generator/, discriminator/, report.md with the FID curve and sample grid).
#
#   JAXGC_ASSETS=../shared/assets scripts/train_teachers.sh [NAME ...]
#
# NAME: dcgan_fmnist, pix2pix_edges2fmnist, stylegan2_fmnist, sagan_fmnist (default: all). Every run is deterministic from its
# config and seed; rerunning resumes a killed run and skips a finished one. The pix2pix data
# (Canny edges -> Fashion-MNIST) is made first with scripts/make_edges.py, into
# ${JAXGC_CACHE:-~/.cache/jaxgc}/data/edges2fmnist.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${JAXGC_CACHE:-$HOME/.cache/jaxgc}"
python="${PYTHON:-python}"
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(dcgan_fmnist pix2pix_edges2fmnist stylegan2_fmnist sagan_fmnist)
for name in "${names[@]}"; do
  case "$name" in
    dcgan_fmnist) config=gan_dcgan_fmnist ;;
    stylegan2_fmnist) config=gan_stylegan2_fmnist ;;
    sagan_fmnist) config=gan_sagan_fmnist ;;
    pix2pix_edges2fmnist)
      config=gan_pix2pix_edges2fmnist
      if [ ! -d "$cache/data/edges2fmnist/train" ]; then
        "$python" "$root/scripts/make_edges.py" "$cache/data/edges2fmnist"
      fi ;;
    *) echo "train_teachers.sh: error: unknown teacher $name (dcgan_fmnist, pix2pix_edges2fmnist, stylegan2_fmnist, sagan_fmnist)" >&2
       exit 2 ;;
  esac
  echo "== $name: $root/configs/$config.py -> $cache/teachers/$name"
  "$python" -m jaxgc gan --config "$root/configs/$config.py" --workdir "$cache/teachers/$name"
done
