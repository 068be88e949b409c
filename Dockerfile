# ctvoco on a CUDA runtime with Python 3.12.
#   docker build -t ctvoco .
#   docker run --gpus all --ipc=host -v /data:/data -v $PWD/outputs:/work/outputs ctvoco \
#       ctvoco-pretrain +experiment=flare data.root=/data/flare
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

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
COPY pyproject.toml README.md ./
COPY conf ./conf
COPY src ./src
RUN pip install . && ctvoco-info --version

WORKDIR /work
CMD ["ctvoco-info"]
