# ditserve: the gRPC server with the bundled model.
#   docker build -t ditserve .
#   docker run -p 50051:50051 -p 9090:9090 ditserve
FROM maven:3.9-eclipse-temurin-25 AS build
WORKDIR /src
COPY pom.xml ./
COPY proto proto
COPY backends backends
COPY client-java client-java
COPY server server
RUN mvn -B -q -DskipTests package

# The JDK image, not the JRE: the pure-Java backend needs the jdk.incubator.vector module.
FROM eclipse-temurin:25-jdk
RUN useradd --system --uid 10001 dit
WORKDIR /app
COPY --from=build /src/server/target/classes /app/classes
COPY --from=build /src/server/target/lib /app/lib
COPY models /models
USER dit
ENV DIT_MODELS=/models
EXPOSE 50051 9090
ENTRYPOINT ["java", "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", \
            "-XX:MaxRAMPercentage=75", "-XX:MaxNewSize=64m", "-cp", "/app/classes:/app/lib/*", \
            "io.ditserve.server.cli.Main", "serve"]
# metrics on every interface of the container, so that the published port reaches them (the default is loopback)
CMD ["--port", "50051", "--set", "metrics_host=0.0.0.0"]
