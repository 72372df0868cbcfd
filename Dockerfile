# Two images from one file:
#   app  (the default, last stage): the project, for the worker, the beat, Flower and migrations
#   mint (--target mint): a Nutshell FakeWallet test mint to try it against (TEST-MINT.md)
# docker-compose.yml builds both.

# ---------------------------------------------------------------- the test mint
FROM python:3.11-slim AS mint
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# without the two pins Nutshell 0.20.2 fails at import or at start; the same three as
# MINT_PINS in scripts/common.sh (tests/test_constraints.py checks they agree)
RUN pip install "cashu==0.20.2" "marshmallow<4" "limits<4"
RUN useradd --system --create-home --home-dir /home/mint mint \
    && mkdir -p /data && chown mint /data
USER mint
WORKDIR /data
ENV MINT_BACKEND_BOLT11_SAT=FakeWallet \
    MINT_LISTEN_HOST=0.0.0.0 \
    MINT_LISTEN_PORT=3338 \
    MINT_DATABASE=/data/mint \
    MINT_AUTH_DATABASE=/data/auth \
    MINT_INPUT_FEE_PPK=100 \
    MINT_RATE_LIMIT=FALSE \
    FAKEWALLET_BRR=TRUE \
    FAKEWALLET_DELAY_INCOMING_PAYMENT=0 \
    FAKEWALLET_DELAY_OUTGOING_PAYMENT=0 \
    CASHU_DIR=/data/.cashu \
    TOR=FALSE
EXPOSE 3338
CMD ["mint"]

# ---------------------------------------------------------------- the app
FROM python:3.11-slim AS app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --system --create-home --home-dir /home/cashu cashu \
    && mkdir -p /data && chown cashu /data
# The dependencies first, at the versions constraints.txt pins (scripts/lock.sh): a layer
# only a change to pyproject.toml or constraints.txt rebuilds, not a change to the code.
COPY pyproject.toml constraints.txt /app/
RUN python -c 'import tomllib; \
        project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
        print("\n".join(project["dependencies"]))' >/tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt -c constraints.txt \
    && rm /tmp/requirements.txt
# Then the code, with nothing left to resolve (pip check: no dependency went missing).
COPY . /app
RUN pip install --no-deps . && pip check
USER cashu
# alembic runs from /app (alembic.ini); the worker runs from /data, where a development
# run keeps its wallet-mnemonic.txt (a volume in docker-compose.yml)
CMD ["celery", "-A", "tasks", "worker", "-Q", "cashu,cashu.beat", "-l", "INFO"]
