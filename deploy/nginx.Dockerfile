# nginx (Debian's package) as the gRPC load balancer of deploy/compose-nginx.yml, with deploy/nginx-compose.conf.
# Built from a Debian image with apt (the Debian mirror must be reachable from the build):
#   docker build -t ditserve-nginx -f deploy/nginx.Dockerfile deploy
#   podman build -t localhost/ditserve-nginx --build-arg BASE=localhost/ditserve-base:bookworm \
#     -f deploy/nginx.Dockerfile deploy                          (local base image: docs/CONTAINERS.md)
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
COPY nginx-compose.conf /etc/nginx/nginx.conf
COPY nginx-entrypoint.sh /usr/local/bin/dit-nginx
# unprivileged: listens on 8080, pid file and temporary files in /tmp, logs to stdout and stderr
USER www-data
EXPOSE 8080
# SIGQUIT: graceful shutdown (running calls finish); SIGTERM would close them at once
STOPSIGNAL SIGQUIT
# waits for the replicas' names, starts nginx, reloads it when a replica's address changes (nginx-entrypoint.sh)
ENTRYPOINT ["/bin/sh", "/usr/local/bin/dit-nginx"]
