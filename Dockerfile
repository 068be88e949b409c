# ctvoco on a CUDA 13.0 runtime (Ubuntu 24.04, Python 3.12). PyPI's torch 2.14 wheels bring
# their own CUDA 13 libraries; the host needs an NVIDIA driver that supports CUDA 13.
#   docker build -t ctvoco .
#   docker run --gpus all --ipc=host -v /data:/data -v /cache:/work/cache \
#       -v $PWD/outputs:/work/outputs ctvoco \
#       ctvoco-pretrain +experiment=flare data.root=/data/FLARE23
# The preprocessed volumes go to /work/cache (paths.cache_dir=./cache): mount a folder there,
# or pass data.cache_dir=, so that they outlive the container.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip setuptools wheel

WORKDIR /opt/ctvoco
COPY pyproject.toml README.md LICENSE ./
COPY conf ./conf
COPY src ./src
# A regular (not editable) install: the image runs the installed package and its configs.
RUN pip install . && ctvoco-info --version

WORKDIR /work
CMD ["ctvoco-info"]
