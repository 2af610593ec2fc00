# Test-only layer: the app image plus ALSA's pulse plugin, so the container can reach the test's
# virtual sound devices (a PulseAudio socket mounted in). On a Pi the app uses /dev/snd directly and
# this plugin (which pulls in libavcodec) is not in the appliance image.
ARG APP_IMAGE=sesame-pi:latest
FROM ${APP_IMAGE}
# hadolint ignore=DL3066
USER root
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libasound2-plugins \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001
