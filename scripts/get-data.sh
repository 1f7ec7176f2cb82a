#!/usr/bin/env bash
# Fashion-MNIST for the default sweep: Debian's dataset-fashion-mnist when apt-get is usable and
# the data is missing. Elsewhere hpsearch falls back to ./data or torchvision's download.
set -euo pipefail
deb=/usr/share/datasets/fashion-mnist
if [ -f "$deb/train-images-idx3-ubyte.gz" ] || [ -d data/FashionMNIST/raw ] \
   || [ -n "${HPSEARCH_DATA_DIR:-}" ]; then
  exit 0
fi
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
if command -v apt-get >/dev/null && $sudo true 2>/dev/null; then
  echo "installing Debian's dataset-fashion-mnist ..."
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || { $sudo apt-get update -qq >/dev/null && \
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
else
  echo "note: no Fashion-MNIST found and apt-get is not usable; torchvision will download it" >&2
fi
