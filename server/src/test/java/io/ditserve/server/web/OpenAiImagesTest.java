package io.ditserve.server.web;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.server.TestServers;
import io.ditserve.server.config.ServerConfig;
import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The OpenAI Images API of the web port over plain HTTP (the official npm client is exercised by
 * web/test/openai.test.mjs): the same bytes as a gRPC call for the same seed, server-sent partial images before the
 * completed one, OpenAI's error JSON with the matching status, the bearer token, and a client that goes away
 * counted CANCELLED.
 */
class OpenAiImagesTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    private TestServers.Running running;

    @AfterEach
    void stop() {
        if (running != null) {
            running.close();
        }
    }

    private TestServers.Running start(ServerConfig c) throws Exception {
        c.webPort = 0;
        running = TestServers.inProcess(c);
        return running;
    }

    private HttpRequest.Builder post(String body, String... headers) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + running.server().webPort()
                + "/v1/images/generations")).header("content-type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return b;
    }

    private HttpResponse<String> send(HttpRequest.Builder b) throws Exception {
        return http.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void generationsGiveTheBytesOfAGrpcCallWithTheSameSeed() throws Exception {
        start(TestServers.config());
        HttpResponse<String> res = send(post("{\"model\":\"pixel-tiny\",\"prompt\":\"Class-3\",\"n\":2,"
                + "\"size\":\"16x16\",\"response_format\":\"b64_json\",\"seed\":77,\"steps\":8,\"sampler\":\"ddim\"}"));
        assertThat(res.statusCode()).as(res.body()).isEqualTo(200);
        JsonNode data = JSON.readTree(res.body()).get("data");
        assertThat(data).hasSize(2);
        List<byte[]> grpc = new ArrayList<>();
        DiffusionServiceGrpc.newBlockingStub(running.channel()).generate(GenerateRequest.newBuilder()
                .setModel("pixel-tiny").setClassName("class-3").setNumImages(2).setSeed(77).setSteps(8)
                .setSampler(io.ditserve.proto.v1.Sampler.SAMPLER_DDIM).build())
                .forEachRemaining(e -> { if (e.hasResult()) { grpc.add(e.getResult().getPng().toByteArray()); } });
        for (int i = 0; i < 2; i++) {
            assertThat(Base64.getDecoder().decode(data.get(i).get("b64_json").asText())).isEqualTo(grpc.get(i));
            assertThat(data.get(i).get("seed").asLong()).isEqualTo(77 + i);
        }
        assertThat(running.server().metrics().awaitRequests("pixel-tiny", "OK", 2, Duration.ofSeconds(5))).isTrue();
    }

    @Test
    void streamSendsPartialImagesThenTheCompletedImage() throws Exception {
        start(TestServers.config());
        HttpResponse<String> res = send(post("{\"model\":\"pixel-tiny\",\"prompt\":\"2\",\"stream\":true,"
                + "\"partial_images\":2,\"steps\":9,\"seed\":5}"));
        assertThat(res.statusCode()).isEqualTo(200);
        assertThat(res.headers().firstValue("content-type").orElse("")).startsWith("text/event-stream");
        List<String> events = new ArrayList<>();
        List<JsonNode> data = new ArrayList<>();
        for (String block : res.body().split("\n\n")) {
            if (block.isBlank()) {
                continue;
            }
            String[] lines = block.split("\n");
            assertThat(lines[0]).startsWith("event: ");
            assertThat(lines[1]).startsWith("data: ");
            events.add(lines[0].substring(7));
            data.add(JSON.readTree(lines[1].substring(6)));
        }
        // one or two partial images (the service keeps only the newest unsent preview of an image, so a fast model
        // on a busy machine may send fewer, as OpenAI's API may), then the completed image
        int partials = events.size() - 1;
        assertThat(partials).isBetween(1, 2);
        assertThat(events.subList(0, partials)).containsOnly("image_generation.partial_image");
        for (int i = 0; i < partials; i++) {
            assertThat(data.get(i).get("partial_image_index").asInt()).isEqualTo(i);
            assertThat(data.get(i).get("b64_json").asText()).isNotEmpty();
        }
        JsonNode completed = data.get(partials);
        assertThat(events.getLast()).isEqualTo("image_generation.completed");
        assertThat(completed.get("type").asText()).isEqualTo("image_generation.completed");
        assertThat(completed.get("size").asText()).isEqualTo("16x16");
        assertThat(completed.get("seed").asLong()).isEqualTo(5);
    }

    @Test
    void errorsAreOpenAisErrorJsonWithTheMatchingStatus(@TempDir Path dir) throws Exception {
        Path tokens = dir.resolve("tokens");
        Files.writeString(tokens, "k\n");
        ServerConfig c = TestServers.config();
        c.authTokensFile = tokens.toString();
        start(c);
        String[] auth = {"authorization", "Bearer k"};

        HttpResponse<String> unauthenticated = send(post("{\"model\":\"pixel-tiny\",\"prompt\":\"1\"}"));
        assertThat(unauthenticated.statusCode()).isEqualTo(401);
        assertThat(JSON.readTree(unauthenticated.body()).at("/error/code").asText()).isEqualTo("invalid_api_key");

        HttpResponse<String> notFound = send(post("{\"model\":\"nope\",\"prompt\":\"1\"}", auth));
        assertThat(notFound.statusCode()).isEqualTo(404);
        JsonNode e = JSON.readTree(notFound.body()).get("error");
        assertThat(e.get("type").asText()).isEqualTo("invalid_request_error");
        assertThat(e.get("message").asText()).contains("not found");
        // the service's validator answered it, and counted it like a gRPC call
        assertThat(running.server().metrics().awaitRequests("unknown", "NOT_FOUND", 1, Duration.ofSeconds(5)))
                .isTrue();

        HttpResponse<String> tooMany = send(post("{\"model\":\"pixel-tiny\",\"prompt\":\"1\",\"n\":1000}", auth));
        assertThat(tooMany.statusCode()).isEqualTo(400);
        assertThat(JSON.readTree(tooMany.body()).at("/error/message").asText()).contains("num_images");

        HttpResponse<String> unknown = send(post("{\"model\":\"pixel-tiny\",\"prompt\":\"1\",\"colour\":1}", auth));
        assertThat(unknown.statusCode()).isEqualTo(400);
        assertThat(JSON.readTree(unknown.body()).at("/error/param").asText()).isEqualTo("colour");

        HttpResponse<String> badJson = send(post("{nope", auth));
        assertThat(badJson.statusCode()).isEqualTo(400);

        HttpResponse<String> models = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:"
                + running.server().webPort() + "/v1/models")).header("authorization", "Bearer k").build(),
                HttpResponse.BodyHandlers.ofString());
        assertThat(models.statusCode()).isEqualTo(200);
        assertThat(JSON.readTree(models.body()).get("data").findValuesAsText("id")).contains("pixel-tiny");
    }

    @Test
    void aClientThatGoesAwayIsCountedCancelled() throws Exception {
        start(TestServers.config());
        HttpResponse<InputStream> res = http.send(post("{\"model\":\"pixel-tiny\",\"prompt\":\"1\",\"stream\":true,"
                + "\"partial_images\":3,\"steps\":1000,\"n\":16}").build(), HttpResponse.BodyHandlers.ofInputStream());
        assertThat(res.statusCode()).isEqualTo(200);
        BufferedReader in = new BufferedReader(new InputStreamReader(res.body(), StandardCharsets.UTF_8));
        assertThat(in.readLine()).isEqualTo("event: image_generation.partial_image");
        in.close(); // the HTTP client goes away mid-stream
        assertThat(running.server().metrics().awaitRequests("pixel-tiny", "CANCELLED", 1, Duration.ofSeconds(20)))
                .isTrue();
    }
}
