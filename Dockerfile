# Alem's one image: the same code and dependencies run the web process, the Celery worker and
# the beat (compose.yaml picks the command, as written in the Procfile). Build: docker build .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A user of its own with no login, no home and no say over the code: the processes may write
# only var/ (the development broker's folder, unused when REDIS_URL is set).
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin alem

WORKDIR /app

# Dependencies first, so a change to the code alone reuses this layer.
COPY requirements.txt ./
RUN pip install --require-hashes -r requirements.txt

COPY . .

# Hashed, compressed static files (whitenoise) baked into the image, so every container serves
# the same ones and none needs a shared volume. The settings only load with DEBUG off when the
# production variables are set: deploy/build-time.env gives throwaway ones to this step alone.
RUN set -a && . deploy/build-time.env && set +a \
    && python manage.py collectstatic --no-input --verbosity 0 \
    && mkdir -p var && chown alem:alem var

USER alem

# Inside a container gunicorn must listen beyond loopback: the proxy reaches it over the
# container network. Which proxy it believes is FORWARDED_ALLOW_IPS (compose.yaml).
ENV GUNICORN_BIND=0.0.0.0:8000
EXPOSE 8000

# The Procfile's web process; compose.yaml runs the worker and the beat from the same image.
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "alem.wsgi"]
