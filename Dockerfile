# ctvoco on python:3.11-slim (the Python of CI and of requirements/image.txt). No CUDA base
# image: PyPI's torch wheels bring their own CUDA libraries, and the NVIDIA container toolkit
# mounts the host's driver (docs/install.md, "Docker").
#   docker build -t ctvoco .
#   docker run --gpus all --ipc=host --user "$(id -u):$(id -g)" \
#       -v /data:/data:ro -v "$PWD/cache:/work/cache" -v "$PWD/outputs:/work/outputs" \
#       ctvoco ctvoco-pretrain +experiment=flare data.root=/data/FLARE23
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /opt/ctvoco

# Dependencies first, from the lock alone: this layer is rebuilt only when the pins change.
COPY requirements/image.txt requirements/
COPY scripts/install-image.sh scripts/
RUN scripts/install-image.sh deps /opt/venv

# Then ctvoco itself, without dependencies (all pinned above), and the smoke commands.
COPY pyproject.toml README.md LICENSE ./
COPY conf ./conf
COPY src ./src
RUN scripts/install-image.sh app /opt/venv /opt/ctvoco \
    && scripts/install-image.sh smoke /opt/venv

# A non-root user; /work is the working directory (mount data, cache and outputs there).
# Any other uid (docker run --user) works as well: HOME points at a folder everyone may write.
RUN useradd --create-home --uid 1000 --user-group ctvoco \
    && mkdir -p /work/cache /work/outputs /home/ctvoco/.cache \
    && chown -R ctvoco:ctvoco /work /home/ctvoco \
    && chmod 1777 /work /work/cache /work/outputs /home/ctvoco /home/ctvoco/.cache
USER ctvoco
ENV HOME=/home/ctvoco \
    MPLCONFIGDIR=/home/ctvoco/.cache/matplotlib
WORKDIR /work

CMD ["ctvoco-info"]
