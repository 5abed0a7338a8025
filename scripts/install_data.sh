#!/bin/sh
# Installs Debian's dataset-fashion-mnist (the embedded default data set) where apt-get exists.
# Never fails the install: without it the training commands say how to get the data.
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get here; pass --data-dir (or --download) to the training commands for Fashion-MNIST"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "note: not root and no sudo; run 'apt-get install dataset-fashion-mnist' as root for the default data"
        exit 0
    fi
fi
echo "installing Debian's dataset-fashion-mnist (the embedded default data)"
$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
    || echo "note: could not install dataset-fashion-mnist; pass --data-dir to the training commands"
exit 0
