package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.inject.Guice;
import com.google.protobuf.ByteString;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.proto.v1.GuidanceMode;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.StepCacheMethod;
import io.ditserve.proto.v1.StepCacheSettings;
import io.ditserve.proto.v1.Sampler;
import io.ditserve.server.config.ServerConfig;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** The real server (Guice wiring, engine, java backend) on an in-process transport, serving the fixture models. */
class GrpcServerTest {
    private DitServer server;
    private ManagedChannel channel;
    private DitClient client;

    @BeforeEach
    void start() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxActive = 1;
        c.maxQueued = 2;
        c.shutdownGraceSeconds = 2;
        TestServers.Running r = TestServers.inProcess(c);
        server = r.server();
        channel = r.channel();
        client = r.client();
    }

    @AfterEach
    void stop() {
        channel.shutdownNow();
        server.stop();
    }

    private static GenerateRequest.Builder pixel() {
        return GenerateRequest.newBuilder().setModel("pixel-tiny").setClassId(3).setSteps(8).setSeed(42);
    }

    private List<GenerateEvent> collect(GenerateRequest r) {
        List<GenerateEvent> events = new ArrayList<>();
        try (DitClient.EventStream s = client.generate(r)) {
            s.forEachRemaining(events::add);
        }
        return events;
    }

    @Test
    void listsModelsWithBackendAndClasses() {
        List<ModelInfo> models = client.listModels();
        assertThat(models).extracting(ModelInfo::getName)
                .containsExactly("latent-tiny", "pixel-tiny", "repa-tiny", "sit-tiny");
        ModelInfo latent = client.getModel("latent-tiny");
        assertThat(latent.getBackend()).isEqualTo("java");
        assertThat(latent.getClassesCount()).isEqualTo(12);
        assertThat(latent.getOutChannels()).isEqualTo(8);
        assertThat(latent.getDefaults().getGuidanceMode()).isEqualTo(GuidanceMode.GUIDANCE_MODE_FIRST_THREE);
        assertThat(latent.getParameters()).isGreaterThan(0);
        assertThat(latent.getFamily()).isEqualTo("dit");
        assertThat(latent.getConditioning()).isEqualTo("class");
        assertThat(latent.getSamplersList()).containsExactly(Sampler.SAMPLER_DDPM, Sampler.SAMPLER_DDIM,
                Sampler.SAMPLER_DPMPP_2M);
        ModelInfo repa = client.getModel("repa-tiny");
        assertThat(repa.getFamily()).isEqualTo("repa");
        assertThat(repa.getPrediction()).isEqualTo("velocity");
        assertThat(repa.getPath()).isEqualTo("linear");
        assertThat(repa.getTimeInput()).isEqualTo("s");
        assertThat(repa.getQkNorm()).isTrue();
        assertThat(repa.getSamplersList()).containsExactly(Sampler.SAMPLER_DPMPP_2M, Sampler.SAMPLER_EULER,
                Sampler.SAMPLER_HEUN, Sampler.SAMPLER_EULER_MARUYAMA);
        assertThat(client.getModel("sit-tiny").getTimeInput()).isEqualTo("1-s");
    }

    /**
     * Flow models through gRPC: Heun's Accepted counts 2·steps − 1 evaluations and reports the network times (SiT:
     * τ = 1 − s, 0 at the noisy start), each Progress carries its step's time; a VP sampler, a guidance interval on
     * a DiT model, a bad interval and a bad shift are refused naming the field and what is allowed.
     */
    @Test
    void flowModelsSampleWithTheirSolversAndRefuseWhatDoesNotFit() {
        GenerateRequest heun = GenerateRequest.newBuilder().setModel("sit-tiny").setClassId(2).setSteps(4)
                .setSampler(Sampler.SAMPLER_HEUN).setGuidanceScale(3f).setSeed(9)
                .setGuidanceInterval(io.ditserve.proto.v1.GuidanceInterval.newBuilder().setLow(0.2f).setHigh(1f))
                .addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR).build();
        List<GenerateEvent> events = collect(heun);
        io.ditserve.proto.v1.Accepted a = events.get(0).getAccepted();
        assertThat(a.getEvaluations()).isEqualTo(7);
        assertThat(a.getTimesList()).containsExactly(0f, 0.25f, 0.5f, 0.75f);
        assertThat(a.getTimestepsList()).isEmpty();
        assertThat(a.getGuidanceInterval().getLow()).isEqualTo(0.2f);
        // a reader that falls behind sees the newest progress only (older unsent ones are replaced): the times it
        // sees are steps' start times, in order, ending with the last step's
        List<Float> times = events.stream().filter(GenerateEvent::hasProgress).map(e -> e.getProgress().getTime())
                .toList();
        assertThat(times).isSorted().isSubsetOf(0f, 0.25f, 0.5f, 0.75f).endsWith(0.75f);
        assertThat(events.stream().filter(GenerateEvent::hasResult).count()).isEqualTo(1);
        assertThat(collect(heun).stream().filter(GenerateEvent::hasResult).findFirst().orElseThrow().getResult()
                .getTensor()).as("the same request, the same bytes").isEqualTo(events.stream()
                        .filter(GenerateEvent::hasResult).findFirst().orElseThrow().getResult().getTensor());

        assertInvalid(heun.toBuilder().setSampler(Sampler.SAMPLER_DDIM).build(), "sampler",
                "SAMPLER_DDIM cannot sample model sit-tiny", "SAMPLER_EULER, SAMPLER_HEUN, SAMPLER_EULER_MARUYAMA");
        assertInvalid(pixel().setGuidanceInterval(io.ditserve.proto.v1.GuidanceInterval.newBuilder().setHigh(0.5f))
                .build(), "guidance_interval", "applies to flow models only");
        assertInvalid(heun.toBuilder().setGuidanceInterval(io.ditserve.proto.v1.GuidanceInterval.newBuilder()
                .setLow(0.8f).setHigh(0.2f)).build(), "guidance_interval", "0 <= low <= high <= 1");
        assertInvalid(heun.toBuilder().setTimestepShift(0f).build(), "timestep_shift", "allowed (0, 100.0]");
        assertInvalid(pixel().setTimestepShift(2f).build(), "timestep_shift", "applies to flow models only");
        assertInvalid(pixel().setPrompt("a red cube").build(), "prompt", "class-conditional");
        // a huge shape is cut in the status (and the log): INVALID_ARGUMENT, not a status too large to send
        FloatTensor.Builder huge = FloatTensor.newBuilder();
        for (int i = 0; i < 100_000; i++) {
            huge.addShape(7);
        }
        assertThatThrownBy(() -> collect(pixel().setInitialNoise(huge).build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                    assertThat(e.getStatus().getDescription()).startsWith("initial_noise.shape: [7, 7, 7, 7] … "
                            + "(100000 dims) does not match").hasSizeLessThan(200);
                });
    }

    private void assertInvalid(GenerateRequest r, String field, String... parts) {
        assertThatThrownBy(() -> collect(r)).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(e.getStatus().getDescription()).startsWith(field);
            for (String p : parts) {
                assertThat(e.getStatus().getDescription()).contains(p);
            }
        });
    }

    /**
     * Step caching through gRPC: Accepted echoes the setting and the block evaluations it costs; the cached image
     * differs from the plain one (blocks really were skipped) but stays close to it; ModelInfo says the model can
     * cache steps.
     */
    @Test
    void stepCachingIsAcceptedEchoedAndChangesTheImageALittle() {
        assertThat(client.getModel("pixel-tiny").getStepCache()).isTrue();
        GenerateRequest plain = pixel().addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR).build();
        GenerateRequest cached = plain.toBuilder().setStepCache(StepCacheSettings.newBuilder()
                .setMethod(StepCacheMethod.STEP_CACHE_INTERVAL).setInterval(3)).build();
        List<GenerateEvent> p = collect(plain);
        List<GenerateEvent> c = collect(cached);
        assertThat(p.get(0).getAccepted().getStepCache().getMethod()).isEqualTo(StepCacheMethod.STEP_CACHE_OFF);
        assertThat(p.get(0).getAccepted().getBlockEvaluations()).isEqualTo(8 * 2); // pixel-tiny has 2 blocks
        assertThat(c.get(0).getAccepted().getStepCache().getInterval()).isEqualTo(3);
        assertThat(c.get(0).getAccepted().getBlockEvaluations()).isEqualTo(4 * 2 + 4); // steps 0, 3, 6, 7 run all
        ByteString a = p.getLast().getResult().getTensor().getData();
        ByteString b = c.getLast().getResult().getTensor().getData();
        assertThat(b).isNotEqualTo(a);
        assertThat(b.size()).isEqualTo(a.size());
    }

    @Test
    void healthAndUnknownModel() {
        var health = HealthGrpc.newBlockingStub(channel).check(HealthCheckRequest.getDefaultInstance());
        assertThat(health.getStatus()).isEqualTo(HealthCheckResponse.ServingStatus.SERVING);
        assertThatThrownBy(() -> DiffusionServiceGrpc.newBlockingStub(channel)
                .getModel(GetModelRequest.newBuilder().setName("nope").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                    assertThat(e.getStatus().getDescription()).contains("nope", "pixel-tiny");
                });
        assertThatThrownBy(() -> collect(pixel().setModel("../pixel-tiny").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND));
    }

    @Test
    void streamsAcceptedProgressPreviewsThenResultsInOrder() {
        List<GenerateEvent> events = collect(pixel().setNumImages(2).setPreviewInterval(2)
                .addOutputFormats(OutputFormat.OUTPUT_FORMAT_PNG).addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR)
                .build());
        assertThat(events.get(0).hasAccepted()).isTrue();
        var acc = events.get(0).getAccepted();
        assertThat(acc.getSeedsList()).containsExactly(42L, 43L);
        assertThat(acc.getTimestepsList()).hasSize(8).startsWith(999).endsWith(0);
        assertThat(acc.getClassId()).isEqualTo(3);

        int lastStep = 0;
        int firstResult = -1;
        List<Integer> previewSteps = new ArrayList<>();
        for (int k = 1; k < events.size(); k++) {
            GenerateEvent e = events.get(k);
            assertThat(e.hasAccepted()).isFalse();
            if (e.hasProgress()) {
                assertThat(firstResult).as("progress after a result").isEqualTo(-1);
                assertThat(e.getProgress().getStep()).isGreaterThan(lastStep);
                lastStep = e.getProgress().getStep();
                assertThat(e.getProgress().getTotalSteps()).isEqualTo(8);
            } else if (e.hasPreview()) {
                assertThat(e.getPreview().getStep() % 2).isZero();
                assertThat(e.getPreview().getPng().substring(1, 4).toStringUtf8()).isEqualTo("PNG");
                previewSteps.add(e.getPreview().getStep());
            } else if (e.hasResult() && firstResult < 0) {
                firstResult = k;
            }
        }
        assertThat(lastStep).isEqualTo(8);
        assertThat(previewSteps).contains(8);
        List<GenerateEvent> results = events.subList(firstResult, events.size());
        assertThat(results).hasSize(2).allMatch(GenerateEvent::hasResult);
        for (GenerateEvent r : results) {
            assertThat(r.getResult().getPng().substring(1, 4).toStringUtf8()).isEqualTo("PNG");
            assertThat(r.getResult().getTensor().getShapeList()).containsExactly(1, 16, 16);
            assertThat(r.getResult().getTensor().getData().size()).isEqualTo(16 * 16 * 4);
        }
        assertThat(results.get(1).getResult().getSeed()).isEqualTo(43L);
    }

    @Test
    void sameSeedSameImagesAndExplicitNoiseIsUsed() {
        GenerateRequest r = pixel().setSampler(Sampler.SAMPLER_DDPM).addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR)
                .build();
        ByteString a = last(collect(r)).getResult().getTensor().getData();
        ByteString b = last(collect(r)).getResult().getTensor().getData();
        ByteString c = last(collect(r.toBuilder().setSeed(7).build())).getResult().getTensor().getData();
        assertThat(a).isEqualTo(b);
        assertThat(a).isNotEqualTo(c);

        ByteBuffer bb = ByteBuffer.allocate(256 * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 256; i++) {
            bb.putFloat((float) Math.sin(i));
        }
        GenerateRequest withNoise = pixel().setSampler(Sampler.SAMPLER_DDIM)
                .addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR)
                .setInitialNoise(FloatTensor.newBuilder().addShape(1).addShape(1).addShape(16).addShape(16)
                        .setData(ByteString.copyFrom(bb.array()))).build();
        ByteString n1 = last(collect(withNoise)).getResult().getTensor().getData();
        // DDIM eta 0 is deterministic given x_T: a different seed with the same explicit noise gives the same image
        ByteString n2 = last(collect(withNoise.toBuilder().setSeed(99).build())).getResult().getTensor().getData();
        ByteString seeded = last(collect(withNoise.toBuilder().clearInitialNoise().build())).getResult().getTensor()
                .getData();
        assertThat(n1).isEqualTo(n2);
        assertThat(n1).isNotEqualTo(seeded);
    }

    private static GenerateEvent last(List<GenerateEvent> events) {
        return events.get(events.size() - 1);
    }

    @Test
    void cancellingMidGenerationStopsTheEngine() throws Exception {
        long before = server.engine().stepsComputed();
        try (DitClient.EventStream s = client.generate(GenerateRequest.newBuilder().setModel("latent-tiny")
                .setClassId(1).setSteps(1000).setGuidanceScale(4).build())) {
            int progress = 0;
            while (progress < 3) {
                if (s.next().hasProgress()) {
                    progress++;
                }
            }
        } // close() cancels the call
        awaitIdle();
        long after = server.engine().stepsComputed();
        assertThat(after - before).as("the cancelled generation stopped before its 1000 steps").isLessThan(1000);
        // the slot is free: a new request runs immediately, and the engine computes its 8 steps and nothing else
        // (a cancelled generation that kept stepping would add its own)
        assertThat(collect(pixel().build()).get(0).getAccepted().getQueuePosition()).isZero();
        awaitIdle(); // the loop counts a tick's steps after the tick's events, which the client may see first
        assertThat(server.engine().stepsComputed()).as("engine kept computing after cancel").isEqualTo(after + 8);
    }

    @Test
    void deadlineIsHonoured() throws Exception {
        long before = server.engine().stepsComputed();
        assertThatThrownBy(() -> {
            try (DitClient.EventStream s = client.generate(GenerateRequest.newBuilder().setModel("latent-tiny")
                    .setClassId(1).setSteps(1000).build(), 1)) {
                s.forEachRemaining(e -> { });
            }
        }).isInstanceOfSatisfying(StatusRuntimeException.class,
                e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
        awaitIdle(); // the server stopped the generation: it did not run its 1000 steps
        assertThat(server.engine().stepsComputed() - before).isLessThan(1000);
    }

    @Test
    void slowClientGetsLatestPreviewsButEveryResultAndDoesNotStallTheEngine() throws Exception {
        List<GenerateEvent> got = new ArrayList<>();
        CountDownLatch done = new CountDownLatch(1);
        CountDownLatch accepted = new CountDownLatch(1);
        Throwable[] error = new Throwable[1];
        ClientCallStreamObserver<?>[] call = new ClientCallStreamObserver<?>[1];
        int steps = 40;
        DiffusionServiceGrpc.newStub(channel).generate(pixel().setNumImages(3).setSteps(steps).setPreviewInterval(1)
                .build(), new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
                    @Override
                    public void beforeStart(ClientCallStreamObserver<GenerateRequest> rs) {
                        call[0] = rs;
                        rs.disableAutoRequestWithInitial(1); // read only the first event, then stall
                    }

                    @Override
                    public synchronized void onNext(GenerateEvent value) {
                        got.add(value);
                        accepted.countDown(); // the first event, Accepted: the generation is in the engine
                    }

                    @Override
                    public void onError(Throwable t) {
                        error[0] = t;
                        done.countDown();
                    }

                    @Override
                    public void onCompleted() {
                        done.countDown();
                    }
                });
        assertThat(accepted.await(30, TimeUnit.SECONDS)).as("the Accepted event").isTrue();
        awaitIdle(); // the engine finished the generation although the client reads nothing
        assertThat(done.getCount()).isEqualTo(1);
        call[0].request(Integer.MAX_VALUE);
        assertThat(done.await(10, TimeUnit.SECONDS)).isTrue();
        assertThat(error[0]).isNull();
        long previews = got.stream().filter(GenerateEvent::hasPreview).count();
        assertThat(got.stream().filter(GenerateEvent::hasResult).count()).isEqualTo(3);
        assertThat(previews).as("stale frames were dropped").isLessThan(3L * steps);
        assertThat(server.service().droppedPreviews()).isGreaterThan(0);
    }

    /** Waits on the engine (it notifies after every tick) until nothing runs or waits. */
    private void awaitIdle() throws InterruptedException {
        assertThat(server.engine().awaitIdle(Duration.ofSeconds(30))).as("engine idle; now %s",
                server.engine().snapshot()).isTrue();
    }

    static Stream<Arguments> invalidRequests() {
        return Stream.of(
                bad("model", b -> b.setModel("")),
                bad("class_id", b -> b.setClassId(10)),
                bad("class_id", b -> b.setClassId(-1)),
                bad("class_name", b -> b.setClassName("class-99")),
                bad("unconditional", b -> b.setUnconditional(false)),
                bad("num_images", b -> b.setNumImages(17)),
                bad("num_images", b -> b.setNumImages(-2)),
                bad("steps", b -> b.setSteps(1001)),
                bad("steps", b -> b.setSteps(-1)),
                bad("sampler", b -> b.setSamplerValue(9)),
                bad("eta", b -> b.setEta(1.5f)),
                bad("eta", b -> b.setEta(Float.NaN)),
                bad("guidance_scale", b -> b.setGuidanceScale(-1)),
                bad("guidance_scale", b -> b.setGuidanceScale(Float.POSITIVE_INFINITY)),
                bad("guidance_scale", b -> b.setUnconditional(true).setGuidanceScale(3)),
                bad("guidance_mode", b -> b.setGuidanceModeValue(7)),
                bad("preview_interval", b -> b.setPreviewInterval(9)),
                bad("preview_interval", b -> b.setPreviewInterval(-1)),
                bad("output_formats[0]", b -> b.addOutputFormatsValue(0)),
                bad("output_formats[1]", b -> b.addOutputFormats(OutputFormat.OUTPUT_FORMAT_PNG).addOutputFormatsValue(5)),
                bad("step_cache.interval", b -> b.setStepCache(StepCacheSettings.newBuilder()
                        .setMethod(StepCacheMethod.STEP_CACHE_INTERVAL))),
                bad("step_cache.interval", b -> b.setStepCache(StepCacheSettings.newBuilder()
                        .setMethod(StepCacheMethod.STEP_CACHE_INTERVAL).setInterval(9))),
                bad("step_cache.interval", b -> b.setStepCache(StepCacheSettings.newBuilder()
                        .setMethod(StepCacheMethod.STEP_CACHE_OFF).setInterval(2))),
                bad("step_cache.method", b -> b.setStepCache(StepCacheSettings.newBuilder().setMethodValue(7))),
                bad("initial_noise.shape", b -> b.setInitialNoise(FloatTensor.newBuilder().addShape(1).addShape(16))),
                bad("initial_noise.data", b -> b.setInitialNoise(FloatTensor.newBuilder().addShape(1).addShape(1)
                        .addShape(16).addShape(16).setData(ByteString.copyFrom(new byte[12])))),
                bad("initial_noise.data", b -> b.setInitialNoise(FloatTensor.newBuilder().addShape(1).addShape(1)
                        .addShape(16).addShape(16).setData(nanNoise()))));
    }

    private static ByteString nanNoise() {
        ByteBuffer bb = ByteBuffer.allocate(1024).order(ByteOrder.LITTLE_ENDIAN);
        bb.putFloat(0, Float.NaN);
        return ByteString.copyFrom(bb.array());
    }

    private static Arguments bad(String field, UnaryOperator<GenerateRequest.Builder> change) {
        return Arguments.of(field, change);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("invalidRequests")
    void invalidFieldIsRejectedNamingFieldAndRange(String field, UnaryOperator<GenerateRequest.Builder> change) {
        GenerateRequest r = change.apply(pixel()).build();
        assertThatThrownBy(() -> collect(r)).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(e.getStatus().getDescription()).startsWith(field + ":");
        });
    }
}
