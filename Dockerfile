# An env server image: `mentorgym serve` on port 8000, built on the base image the project
# already builds offline (scripts/docker_up.sh). scripts/build_env_image.sh downloads the
# wheels on the host (the image has no pip and may have no network), then builds this.
#
#   bash scripts/build_env_image.sh
#   docker run -d -p 8000:8000 -e MENTORGYM_SERVE_TOKEN=$TOKEN \
#       -e MENTORGYM_SERVE_ENVS=mentorgym/Sokoban-v0,mentorgym/MathTools-v0 mentorgym/env-server
#
# SWE envs start their sandboxes on a Docker engine: mount the host's socket
# (-v /var/run/docker.sock:/var/run/docker.sock), which gives the server that engine.
ARG BASE_IMAGE=mentorgym/base:latest
FROM ${BASE_IMAGE}
COPY build/env-image/wheels /tmp/wheels
RUN PIP="$(ls /tmp/wheels/pip-*.whl)/pip" \
    && python3 "$PIP" install --no-cache-dir --no-index --break-system-packages \
        --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
    && python3 "$PIP" install --no-cache-dir --no-index --no-deps --break-system-packages \
        --find-links /tmp/wheels mentorgym \
    && rm -rf /tmp/wheels
ENV MENTORGYM_SERVE_ENVS=mentorgym/Sokoban-v0 PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python3 -c "import os, urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8000/health', headers={'X-API-Key': os.environ.get('MENTORGYM_SERVE_TOKEN', '')}), timeout=4)"
# Binding 0.0.0.0 needs MENTORGYM_SERVE_TOKEN: the server refuses to start without one.
CMD ["sh", "-c", "exec python3 -m mentorgym.cli serve $(echo $MENTORGYM_SERVE_ENVS | tr ',' ' ') --host 0.0.0.0 --port 8000"]
