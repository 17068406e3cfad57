# ditserve: the gRPC server with the bundled model, on a jlink-ed Java 25 runtime, as a non-root user.
#
# Real world (public base images, Maven inside the build; BuildKit or podman/buildah skip the unused stage):
#   docker build -t ditserve .
#   docker run -p 50051:50051 -p 9090:9090 ditserve
#
# Without a registry (what tools/container_test.sh runs; docs/CONTAINERS.md): local base images and what the
# host built (server/target/classes and lib, the jlink-ed runtime in target/container/jre, the health probe in
# target/container/probe), no Maven and no JDK inside the build:
#   podman build --format docker --build-arg BUILD=prebuilt \
#     --build-arg RUNTIME_BASE=localhost/ditserve-base:bookworm -t localhost/ditserve:latest .
#
# Build arguments:
#   BUILD         maven (default): build with Maven in BUILD_BASE; prebuilt: copy the host's build outputs
#   BUILD_BASE    the JDK 25 + Maven image of the maven build (default maven:3.9-eclipse-temurin-25)
#   RUNTIME_BASE  the image the server runs on: any glibc Linux with useradd (default debian:bookworm-slim)
#   JLINK_MODULES the Java modules of the runtime (checked with jdeps on server/target; see docs/CONTAINERS.md)
# The HEALTHCHECK instruction is Docker-format only: with podman/buildah build with `--format docker`.
ARG BUILD=maven
ARG BUILD_BASE=maven:3.9-eclipse-temurin-25
ARG RUNTIME_BASE=debian:bookworm-slim
ARG WEB_BASE=node:20-bookworm-slim
ARG JLINK_MODULES=java.base,java.desktop,java.logging,java.management,java.naming,java.sql,jdk.crypto.ec,jdk.httpserver,jdk.incubator.vector,jdk.jfr,jdk.management,jdk.naming.dns,jdk.unsupported

# --- BUILD=maven: compile, test-free package, jlink the runtime, compile the health probe -------------------
# --- the web page (issue 27) for BUILD=maven: web/build.sh with the pinned npm packages --------------------------
FROM ${WEB_BASE} AS web-maven
WORKDIR /src
COPY proto proto
COPY web web
RUN bash web/build.sh && mkdir -p /out && cp -r web/dist /out/web

FROM ${BUILD_BASE} AS build-maven
LABEL io.ditserve.build-stage=maven
ARG JLINK_MODULES
WORKDIR /src
COPY pom.xml ./
COPY proto proto
COPY backends backends
COPY client-java client-java
COPY server server
COPY tools/container/HealthProbe.java tools/container/HealthProbe.java
RUN mvn -B -DskipTests clean package \
 && mkdir -p /out/app \
 && cp -r server/target/classes server/target/lib /out/app/ \
 && javac --release 25 -cp 'server/target/lib/*' -d /out/app/probe tools/container/HealthProbe.java \
 && jlink --add-modules "$JLINK_MODULES" --strip-java-debug-attributes --no-header-files --no-man-pages \
      --compress=zip-6 --output /out/jre

COPY --from=web-maven /out/web /out/app/web

# --- BUILD=prebuilt: the same layout, from the host (tools/container_test.sh prepares it) --------------------
FROM ${RUNTIME_BASE} AS build-prebuilt
# the label lets tools/container_test.sh remove this stage's images left behind by a rebuild
LABEL io.ditserve.build-stage=prebuilt
COPY server/target/classes /out/app/classes
COPY server/target/lib /out/app/lib
COPY target/container/probe /out/app/probe
COPY target/container/jre /out/jre
COPY web/dist /out/app/web

FROM build-${BUILD} AS build

# --- the runtime image --------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE}
RUN groupadd --gid 10001 dit \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dit
COPY --from=build /out/jre /opt/java
COPY --from=build /out/app /app
COPY models /models
# DIT_WEB_DIST: the page that web_port serves (off unless web_port is set, e.g. --set web_port=8081)
ENV JAVA_HOME=/opt/java PATH=/opt/java/bin:$PATH DIT_MODELS=/models DIT_WEB_DIST=/app/web
USER 10001:10001
WORKDIR /app
EXPOSE 50051 9090
# SIGTERM (docker/podman stop) drains: health NOT_SERVING, running generations get shutdown_grace_seconds (30 s);
# give `stop` a longer timeout than that (compose: stop_grace_period). Exit code 0 after a completed drain.
STOPSIGNAL SIGTERM
ENTRYPOINT ["java", "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", \
            "--sun-misc-unsafe-memory-access=allow", "-XX:MaxRAMPercentage=75", "-XX:MaxNewSize=64m", \
            "-cp", "/app/classes:/app/lib/*", "io.ditserve.server.cli.Main", "serve"]
# metrics on every interface of the container, so that the published port reaches them (the default is loopback)
CMD ["--port", "50051", "--set", "metrics_host=0.0.0.0"]
# grpc.health.v1 Check over plaintext on localhost:50051 (override with DIT_HEALTH_TARGET=host:port); exit 0 when
# SERVING. A small JVM (about 1 s of CPU) per check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["java", "--enable-native-access=ALL-UNNAMED", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx48m", \
       "-Xss512k", "-cp", "/app/probe:/app/lib/*", "HealthProbe"]
