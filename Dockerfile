# One image for every process of the wallet system (api, history-api, worker, beat,
# relay, history-worker, flower, migrate); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first so code changes do not re-run the install (layer cache).
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Celery refuses nothing as root but warns loudly; nothing here needs root.
RUN useradd --system --uid 10001 --no-create-home --home-dir /app wallet
USER wallet

EXPOSE 3000 3001 5555
CMD ["sh", "-c", "exec gunicorn --config gunicorn.conf.py --bind 0.0.0.0:${API_PORT:-3000} 'app.api:create_app()'"]
