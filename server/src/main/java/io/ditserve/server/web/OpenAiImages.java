package io.ditserve.server.web;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.linecorp.armeria.common.AggregatedHttpRequest;
import com.linecorp.armeria.common.HttpData;
import com.linecorp.armeria.common.HttpHeaderNames;
import com.linecorp.armeria.common.HttpMethod;
import com.linecorp.armeria.common.HttpResponse;
import com.linecorp.armeria.common.HttpResponseWriter;
import com.linecorp.armeria.common.HttpStatus;
import com.linecorp.armeria.common.MediaType;
import com.linecorp.armeria.common.ResponseHeaders;
import com.linecorp.armeria.server.HttpService;
import com.linecorp.armeria.server.ServiceRequestContext;
import io.ditserve.proto.v1.ClassInfo;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.proto.v1.GuidanceMode;
import io.ditserve.proto.v1.ListModelsRequest;
import io.ditserve.proto.v1.ListModelsResponse;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.PromptTokens;
import io.ditserve.proto.v1.Sampler;
import io.grpc.Channel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.util.Base64;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * OpenAI's Images API on the web port, onto the same service as gRPC:
 * <ul>
 *   <li>{@code POST /v1/images/generations}: {@code model}, {@code prompt}, {@code n}, {@code size} ({@code auto}
 *       or the model's WxH), {@code response_format} ({@code b64_json}), {@code stream}, {@code partial_images}
 *       (0–3), and our settings as extra fields ({@code seed}, {@code steps}, {@code sampler}, {@code
 *       guidance_scale}, {@code eta}, {@code guidance_mode}, {@code timestep_shift}, {@code negative_prompt}). For a
 *       class model the prompt names a class (its name, any case, or its id); for a text model it is the prompt.
 *       The body becomes a {@link GenerateRequest} that goes through the gRPC port's interceptors, validator,
 *       engine and metrics (an in-process gRPC call), so the engine cannot tell it from a gRPC call.</li>
 *   <li>With {@code stream: true}: server-sent events {@code image_generation.partial_image} (from the previews)
 *       then {@code image_generation.completed} per image, as OpenAI streams them.</li>
 *   <li>{@code GET /v1/models} and {@code GET /v1/models/{id}}.</li>
 * </ul>
 * The {@code Authorization: Bearer} header is passed on to the service's token check. Errors are OpenAI's error
 * JSON with the HTTP status that matches the gRPC status (after a stream has started: an {@code error} event).
 */
final class OpenAiImages {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Metadata.Key<String> AUTHORIZATION =
            Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
    /** OpenAI's fields that are accepted and ignored or checked here; anything else is an unknown parameter. */
    private static final Set<String> OPENAI_FIELDS = Set.of("model", "prompt", "n", "size", "response_format",
            "stream", "partial_images", "quality", "background", "output_format", "output_compression", "moderation",
            "user", "style", "safety_identifier");
    private static final Set<String> OUR_FIELDS = Set.of("seed", "steps", "sampler", "guidance_scale", "eta",
            "guidance_mode", "timestep_shift", "negative_prompt");

    /** Events the in-process call may have in flight (a generation sends at most a few per step). */
    private static final int EVENT_WINDOW = 1 << 20;

    private final Channel channel;
    private final int minPreviewInterval;

    OpenAiImages(Channel channel, int minPreviewInterval) {
        this.channel = channel;
        this.minPreviewInterval = minPreviewInterval;
    }

    HttpService service() {
        return (ctx, req) -> {
            String path = ctx.path();
            if (path.equals("/v1/images/generations")) {
                if (req.method() != HttpMethod.POST) {
                    return error(HttpStatus.METHOD_NOT_ALLOWED, "invalid_request_error", null, null,
                            "use POST for /v1/images/generations");
                }
                return HttpResponse.of(req.aggregate().thenApply(agg -> generate(ctx, agg)));
            }
            if (path.equals("/v1/models") || path.startsWith("/v1/models/")) {
                if (req.method() != HttpMethod.GET) {
                    return error(HttpStatus.METHOD_NOT_ALLOWED, "invalid_request_error", null, null,
                            "use GET for " + path);
                }
                return models(ctx, req.headers().get(HttpHeaderNames.AUTHORIZATION),
                        path.length() > "/v1/models/".length() ? path.substring("/v1/models/".length()) : null);
            }
            return error(HttpStatus.NOT_FOUND, "invalid_request_error", null, "unknown_url",
                    "Unknown request URL: " + req.method() + " " + path + ". This server serves POST "
                            + "/v1/images/generations, GET /v1/models and GET /v1/models/{model}.");
        };
    }

    // ---- GET /v1/models

    private HttpResponse models(ServiceRequestContext ctx, String authorization, String id) {
        CompletableFuture<HttpResponse> out = new CompletableFuture<>();
        DiffusionServiceGrpc.DiffusionServiceStub stub = stub(ctx, authorization);
        if (id == null) {
            stub.listModels(ListModelsRequest.getDefaultInstance(), unary(out, r -> {
                ObjectNode list = JSON.createObjectNode().put("object", "list");
                ArrayNode data = list.putArray("data");
                r.getModelsList().forEach(m -> data.add(model(m)));
                return HttpResponse.ofJson(list);
            }));
        } else {
            stub.getModel(GetModelRequest.newBuilder().setName(id).build(),
                    unary(out, m -> HttpResponse.ofJson(model(m))));
        }
        return HttpResponse.of(out);
    }

    private static ObjectNode model(ModelInfo m) {
        ObjectNode n = JSON.createObjectNode().put("id", m.getName()).put("object", "model").put("created", 0)
                .put("owned_by", "ditserve");
        n.put("conditioning", conditioning(m)).put("size", size(m)).put("description", m.getDescription());
        return n;
    }

    private static <T> StreamObserver<T> unary(CompletableFuture<HttpResponse> out,
            java.util.function.Function<T, HttpResponse> ok) {
        return new StreamObserver<>() {
            @Override
            public void onNext(T value) {
                out.complete(ok.apply(value));
            }

            @Override
            public void onError(Throwable t) {
                out.complete(error(Status.fromThrowable(t)));
            }

            @Override
            public void onCompleted() {}
        };
    }

    // ---- POST /v1/images/generations

    /** A request body that could not be turned into a GenerateRequest (answered with 400). */
    private static final class BadRequest extends Exception {
        final String param;
        final String code;

        BadRequest(String param, String code, String message) {
            super(message, null, false, false);
            this.param = param;
            this.code = code;
        }
    }

    /** What the body asked for besides the GenerateRequest. */
    private record Options(boolean stream, int partialImages, String size) {}

    private HttpResponse generate(ServiceRequestContext ctx, AggregatedHttpRequest req) {
        JsonNode body;
        try {
            body = JSON.readTree(req.content().toStringUtf8());
        } catch (java.io.IOException e) {
            return error(HttpStatus.BAD_REQUEST, "invalid_request_error", null, null,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                            + "your HTTP library correctly. The OpenAI API expects a JSON payload.)");
        }
        if (body == null || !body.isObject()) {
            return error(HttpStatus.BAD_REQUEST, "invalid_request_error", null, null,
                    "The request body must be a JSON object.");
        }
        String authorization = req.headers().get(HttpHeaderNames.AUTHORIZATION);
        DiffusionServiceGrpc.DiffusionServiceStub stub = stub(ctx, authorization);
        String modelName = body.path("model").asText("");
        CompletableFuture<HttpResponse> out = new CompletableFuture<>();
        // the model's classes, default steps and size; a model that does not exist is left to Generate (its
        // validator answers NOT_FOUND and counts the call, as for a gRPC client)
        stub.getModel(GetModelRequest.newBuilder().setName(modelName).build(), new StreamObserver<>() {
            @Override
            public void onNext(ModelInfo model) {
                start(ctx, stub, body, model, out);
            }

            @Override
            public void onError(Throwable t) {
                Status s = Status.fromThrowable(t);
                if (s.getCode() == Status.Code.NOT_FOUND) {
                    start(ctx, stub, body, null, out);
                } else {
                    out.complete(error(s));
                }
            }

            @Override
            public void onCompleted() {}
        });
        return HttpResponse.of(out);
    }

    private void start(ServiceRequestContext ctx, DiffusionServiceGrpc.DiffusionServiceStub stub, JsonNode body,
            ModelInfo model, CompletableFuture<HttpResponse> out) {
        GenerateRequest request;
        Options options;
        try {
            options = options(body, model);
            request = request(body, model, options);
        } catch (BadRequest e) {
            out.complete(error(HttpStatus.BAD_REQUEST, "invalid_request_error", e.param, e.code, e.getMessage()));
            return;
        }
        if (options.stream()) {
            stub.generate(request, new SseObserver(ctx, out, options));
        } else {
            stub.generate(request, new CollectingObserver(ctx, out, options));
        }
    }

    private Options options(JsonNode body, ModelInfo model) throws BadRequest {
        for (var it = body.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!OPENAI_FIELDS.contains(f) && !OUR_FIELDS.contains(f)) {
                throw new BadRequest(f, "unknown_parameter", "Unknown parameter: '" + f + "'.");
            }
        }
        String format = text(body, "response_format");
        if (format != null && !format.equals("b64_json")) {
            throw new BadRequest("response_format", "invalid_value", "Invalid value: '" + format
                    + "'. This server supports only 'b64_json' (images are returned in the response, not as URLs).");
        }
        String outputFormat = text(body, "output_format");
        if (outputFormat != null && !outputFormat.equals("png")) {
            throw new BadRequest("output_format", "invalid_value", "Invalid value: '" + outputFormat
                    + "'. This server supports only 'png'.");
        }
        String background = text(body, "background");
        if (background != null && background.equals("transparent")) {
            throw new BadRequest("background", "invalid_value",
                    "Invalid value: 'transparent'. This server supports 'auto' and 'opaque'.");
        }
        boolean stream = bool(body, "stream");
        Integer partial = integer(body, "partial_images");
        int partialImages = partial == null ? 0 : partial;
        if (partialImages < 0 || partialImages > 3) {
            throw new BadRequest("partial_images", "invalid_value", "Invalid 'partial_images': "
                    + partialImages + ". It must be between 0 and 3.");
        }
        String size = text(body, "size");
        if (model != null) {
            String ours = size(model);
            if (size != null && !size.equals("auto") && !size.equals(ours)) {
                throw new BadRequest("size", "invalid_value", "Invalid size '" + size + "': model "
                        + model.getName() + " makes " + ours + " images; use 'auto' or '" + ours + "'.");
            }
            size = ours;
        }
        return new Options(stream, partialImages, size == null ? "auto" : size);
    }

    private GenerateRequest request(JsonNode body, ModelInfo model, Options options) throws BadRequest {
        GenerateRequest.Builder r = GenerateRequest.newBuilder();
        String name = text(body, "model");
        if (name == null) {
            throw new BadRequest("model", "missing_required_parameter", "Missing required parameter: 'model'. "
                    + "GET /v1/models lists the models of this server.");
        }
        r.setModel(name);
        String prompt = text(body, "prompt");
        if (prompt == null) {
            throw new BadRequest("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'.");
        }
        if (model != null && conditioning(model).equals("class")) {
            label(r, model, prompt);
        } else {
            // a text model, or a model that does not exist (the validator answers for it)
            r.setPrompt(prompt);
        }
        Integer n = integer(body, "n");
        if (n != null) {
            if (n < 1) {
                throw new BadRequest("n", "invalid_value", "Invalid 'n': " + n + ". It must be at least 1.");
            }
            r.setNumImages(n);
        }
        Long seed = longValue(body, "seed");
        if (seed != null) {
            r.setSeed(seed);
        }
        Integer steps = integer(body, "steps");
        if (steps != null) {
            r.setSteps(steps);
        }
        String sampler = text(body, "sampler");
        if (sampler != null) {
            r.setSampler(sampler(sampler));
        }
        Double guidance = number(body, "guidance_scale");
        if (guidance != null) {
            r.setGuidanceScale(guidance.floatValue());
        }
        Double eta = number(body, "eta");
        if (eta != null) {
            r.setEta(eta.floatValue());
        }
        Double shift = number(body, "timestep_shift");
        if (shift != null) {
            r.setTimestepShift(shift.floatValue());
        }
        String mode = text(body, "guidance_mode");
        if (mode != null) {
            r.setGuidanceMode(switch (mode.toLowerCase(Locale.ROOT)) {
                case "all" -> GuidanceMode.GUIDANCE_MODE_ALL;
                case "first_three", "first3" -> GuidanceMode.GUIDANCE_MODE_FIRST_THREE;
                default -> throw new BadRequest("guidance_mode", "invalid_value", "Invalid 'guidance_mode': '"
                        + mode + "'. Use 'all' or 'first_three'.");
            });
        }
        String negative = text(body, "negative_prompt");
        if (negative != null) {
            r.setNegativePrompt(negative);
        }
        if (options.stream() && options.partialImages() > 0) {
            // previews every k steps, k chosen so that partial_images of them come before the last step
            int total = steps != null && steps > 0 ? steps : model != null ? model.getDefaults().getSteps() : 0;
            int k = total > 0 ? Math.max(1, total / (options.partialImages() + 1)) : 1;
            r.setPreviewInterval(Math.max(k, minPreviewInterval));
        }
        return r.build();
    }

    /** A class model's label from the prompt: a class name (exact, else ignoring case), a class id, or none. */
    private static void label(GenerateRequest.Builder r, ModelInfo model, String prompt) {
        String p = prompt.strip();
        if (p.isEmpty() || p.equalsIgnoreCase("unconditional")) {
            r.setUnconditional(true);
            return;
        }
        for (ClassInfo c : model.getClassesList()) {
            if (c.getName().equals(p)) {
                r.setClassName(c.getName());
                return;
            }
        }
        for (ClassInfo c : model.getClassesList()) {
            if (c.getName().equalsIgnoreCase(p)) {
                r.setClassName(c.getName());
                return;
            }
        }
        if (p.matches("[0-9]{1,9}")) {
            r.setClassId(Integer.parseInt(p));
            return;
        }
        r.setClassName(prompt); // not a class: the validator says so, with the list of classes
    }

    private static Sampler sampler(String name) throws BadRequest {
        String n = name.toUpperCase(Locale.ROOT).replace('-', '_').replace("+", "P");
        if (!n.startsWith("SAMPLER_")) {
            n = "SAMPLER_" + n;
        }
        try {
            Sampler s = Sampler.valueOf(n);
            if (s != Sampler.UNRECOGNIZED) {
                return s;
            }
        } catch (IllegalArgumentException e) {
            // below
        }
        StringBuilder known = new StringBuilder();
        for (Sampler s : Sampler.values()) {
            if (s != Sampler.UNRECOGNIZED && s != Sampler.SAMPLER_UNSPECIFIED) {
                known.append(known.isEmpty() ? "" : ", ").append(s.name().substring(8).toLowerCase(Locale.ROOT));
            }
        }
        throw new BadRequest("sampler", "invalid_value", "Invalid 'sampler': '" + name + "'. Known: " + known + ".");
    }

    // ---- streams

    /** Non-streaming: collects the results, then answers with OpenAI's ImagesResponse. */
    private static final class CollectingObserver implements ClientResponseObserver<GenerateRequest, GenerateEvent> {
        private final ServiceRequestContext ctx;
        private final CompletableFuture<HttpResponse> out;
        private final Options options;
        private final Map<Integer, io.ditserve.proto.v1.Result> results = new TreeMap<>();
        private int inputTokens;

        CollectingObserver(ServiceRequestContext ctx, CompletableFuture<HttpResponse> out, Options options) {
            this.ctx = ctx;
            this.out = out;
            this.options = options;
        }

        @Override
        public void beforeStart(ClientCallStreamObserver<GenerateRequest> call) {
            // ready for every event at once: with one message in flight at a time (the stub's default), the
            // service would see a slow client and keep only the newest preview, and partial images would be lost
            call.disableAutoRequestWithInitial(EVENT_WINDOW);
            ctx.whenRequestCancelling().thenAccept(cause -> call.cancel("the HTTP client went away", cause));
        }

        @Override
        public void onNext(GenerateEvent e) {
            if (e.hasAccepted()) {
                inputTokens = tokens(e.getAccepted());
            } else if (e.hasResult()) {
                results.put(e.getResult().getImageIndex(), e.getResult());
            }
        }

        @Override
        public void onError(Throwable t) {
            out.complete(error(Status.fromThrowable(t)));
        }

        @Override
        public void onCompleted() {
            ObjectNode r = JSON.createObjectNode().put("created", System.currentTimeMillis() / 1000);
            ArrayNode data = r.putArray("data");
            for (io.ditserve.proto.v1.Result res : results.values()) {
                data.addObject().put("b64_json", Base64.getEncoder().encodeToString(res.getPng().toByteArray()))
                        .put("seed", res.getSeed()).put("image_index", res.getImageIndex());
            }
            r.put("background", "opaque").put("output_format", "png").put("quality", "auto")
                    .put("size", options.size());
            r.set("usage", usage(inputTokens));
            out.complete(HttpResponse.ofJson(r));
        }
    }

    /**
     * Streaming: server-sent events, as OpenAI's streaming image generation sends them. The status line goes out
     * with the Accepted event, so that a request refused before it (invalid, queue full, unauthenticated) gets a
     * real HTTP error status; a failure after it is an {@code error} event.
     */
    private static final class SseObserver implements ClientResponseObserver<GenerateRequest, GenerateEvent> {
        private final ServiceRequestContext ctx;
        private final CompletableFuture<HttpResponse> out;
        private final HttpResponseWriter writer = HttpResponse.streaming();
        private final Options options;
        private final AtomicBoolean started = new AtomicBoolean();
        private final Map<Integer, Integer> partials = new HashMap<>();
        private int inputTokens;

        SseObserver(ServiceRequestContext ctx, CompletableFuture<HttpResponse> out, Options options) {
            this.ctx = ctx;
            this.out = out;
            this.options = options;
        }

        @Override
        public void beforeStart(ClientCallStreamObserver<GenerateRequest> call) {
            // ready for every event at once: with one message in flight at a time (the stub's default), the
            // service would see a slow client and keep only the newest preview, and partial images would be lost
            call.disableAutoRequestWithInitial(EVENT_WINDOW);
            ctx.whenRequestCancelling().thenAccept(cause -> call.cancel("the HTTP client went away", cause));
            writer.whenComplete().exceptionally(t -> {
                call.cancel("the HTTP client went away", t);
                return null;
            });
        }

        private void begin() {
            if (started.compareAndSet(false, true)) {
                writer.write(ResponseHeaders.builder(HttpStatus.OK).contentType(MediaType.EVENT_STREAM)
                        .set(HttpHeaderNames.CACHE_CONTROL, "no-cache").build());
                out.complete(writer);
            }
        }

        private void event(String type, ObjectNode data) {
            data.put("type", type);
            writer.tryWrite(HttpData.ofUtf8("event: " + type + "\ndata: " + data + "\n\n"));
        }

        private ObjectNode common(String b64) {
            return JSON.createObjectNode().put("b64_json", b64).put("background", "opaque")
                    .put("created_at", System.currentTimeMillis() / 1000).put("output_format", "png")
                    .put("quality", "auto").put("size", options.size());
        }

        @Override
        public void onNext(GenerateEvent e) {
            if (e.hasAccepted()) {
                inputTokens = tokens(e.getAccepted());
                begin();
            } else if (e.hasPreview() && options.partialImages() > 0) {
                int image = e.getPreview().getImageIndex();
                int index = partials.getOrDefault(image, 0);
                if (index < options.partialImages()) {
                    partials.put(image, index + 1);
                    ObjectNode d = common(Base64.getEncoder().encodeToString(e.getPreview().getPng().toByteArray()));
                    d.put("partial_image_index", index).put("image_index", image)
                            .put("step", e.getPreview().getStep());
                    event("image_generation.partial_image", d);
                }
            } else if (e.hasResult()) {
                var res = e.getResult();
                ObjectNode d = common(Base64.getEncoder().encodeToString(res.getPng().toByteArray()));
                d.set("usage", usage(inputTokens));
                d.put("seed", res.getSeed()).put("image_index", res.getImageIndex());
                event("image_generation.completed", d);
            }
        }

        @Override
        public void onError(Throwable t) {
            Status s = Status.fromThrowable(t);
            if (!started.get()) {
                out.complete(error(s)); // nothing sent yet: a plain HTTP error
                writer.abort();
                return;
            }
            ObjectNode d = JSON.createObjectNode();
            d.set("error", errorBody(s));
            event("error", d);
            writer.close();
        }

        @Override
        public void onCompleted() {
            begin();
            writer.close();
        }
    }

    private static int tokens(io.ditserve.proto.v1.Accepted a) {
        int n = 0;
        for (PromptTokens t : a.getPromptTokensList()) {
            if (!t.getNegative()) {
                n = Math.max(n, t.getTokens());
            }
        }
        return n;
    }

    private static ObjectNode usage(int inputTokens) {
        ObjectNode u = JSON.createObjectNode().put("input_tokens", inputTokens).put("output_tokens", 0)
                .put("total_tokens", inputTokens);
        u.putObject("input_tokens_details").put("image_tokens", 0).put("text_tokens", inputTokens);
        return u;
    }

    // ---- helpers

    private DiffusionServiceGrpc.DiffusionServiceStub stub(ServiceRequestContext ctx, String authorization) {
        Metadata md = new Metadata();
        if (authorization != null) {
            md.put(AUTHORIZATION, authorization);
        }
        md.put(RemoteAddressInterceptor.PEER, ctx.remoteAddress().getAddress().getHostAddress());
        return DiffusionServiceGrpc.newStub(channel).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
    }

    static String conditioning(ModelInfo m) {
        return m.getConditioning().isEmpty() ? "class" : m.getConditioning(); // older servers: class
    }

    static String size(ModelInfo m) {
        int s = m.getOutputImageSize() > 0 ? m.getOutputImageSize() : m.getImageSize();
        return s + "x" + s;
    }

    private static String text(JsonNode body, String field) throws BadRequest {
        JsonNode n = body.get(field);
        if (n == null || n.isNull()) {
            return null;
        }
        if (!n.isTextual()) {
            throw new BadRequest(field, "invalid_type", "Invalid type for '" + field + "': expected a string, but got "
                    + kind(n) + " instead.");
        }
        return n.asText();
    }

    private static boolean bool(JsonNode body, String field) throws BadRequest {
        JsonNode n = body.get(field);
        if (n == null || n.isNull()) {
            return false;
        }
        if (!n.isBoolean()) {
            throw new BadRequest(field, "invalid_type", "Invalid type for '" + field + "': expected a boolean, but got "
                    + kind(n) + " instead.");
        }
        return n.asBoolean();
    }

    private static Integer integer(JsonNode body, String field) throws BadRequest {
        Long v = longValue(body, field);
        if (v == null) {
            return null;
        }
        if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
            throw new BadRequest(field, "invalid_value", "Invalid '" + field + "': " + v + " is out of range.");
        }
        return v.intValue();
    }

    private static Long longValue(JsonNode body, String field) throws BadRequest {
        JsonNode n = body.get(field);
        if (n == null || n.isNull()) {
            return null;
        }
        if (!n.isIntegralNumber() || !n.canConvertToLong()) {
            throw new BadRequest(field, "invalid_type", "Invalid type for '" + field + "': expected an integer, but got "
                    + kind(n) + " instead.");
        }
        return n.asLong();
    }

    private static Double number(JsonNode body, String field) throws BadRequest {
        JsonNode n = body.get(field);
        if (n == null || n.isNull()) {
            return null;
        }
        if (!n.isNumber()) {
            throw new BadRequest(field, "invalid_type", "Invalid type for '" + field + "': expected a number, but got "
                    + kind(n) + " instead.");
        }
        return n.asDouble();
    }

    private static String kind(JsonNode n) {
        return n.isTextual() ? "a string" : n.isBoolean() ? "a boolean" : n.isNumber() ? "a number"
                : n.isArray() ? "an array" : n.isObject() ? "an object" : "null";
    }

    /** OpenAI's error JSON for a gRPC status, with the matching HTTP status. */
    static HttpResponse error(Status s) {
        return HttpResponse.ofJson(httpStatus(s.getCode()), wrap(errorBody(s)));
    }

    static HttpResponse error(HttpStatus status, String type, String param, String code, String message) {
        ObjectNode e = JSON.createObjectNode().put("message", message).put("type", type);
        e.put("param", param).put("code", code);
        return HttpResponse.ofJson(status, wrap(e));
    }

    private static ObjectNode wrap(ObjectNode error) {
        ObjectNode r = JSON.createObjectNode();
        r.set("error", error);
        return r;
    }

    static ObjectNode errorBody(Status s) {
        String type = switch (s.getCode()) {
            case UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
                 OUT_OF_RANGE, ALREADY_EXISTS, CANCELLED -> "invalid_request_error";
            case RESOURCE_EXHAUSTED -> "rate_limit_error";
            default -> "server_error";
        };
        String code = switch (s.getCode()) {
            case UNAUTHENTICATED -> "invalid_api_key";
            case NOT_FOUND -> "model_not_found";
            case RESOURCE_EXHAUSTED -> "rate_limit_exceeded";
            default -> s.getCode().name().toLowerCase(Locale.ROOT);
        };
        String message = s.getDescription() != null ? s.getDescription() : s.getCode().name();
        return JSON.createObjectNode().put("message", message).put("type", type).putNull("param").put("code", code);
    }

    static HttpStatus httpStatus(Status.Code code) {
        return switch (code) {
            case OK -> HttpStatus.OK;
            case INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE -> HttpStatus.BAD_REQUEST;
            case UNAUTHENTICATED -> HttpStatus.UNAUTHORIZED;
            case PERMISSION_DENIED -> HttpStatus.FORBIDDEN;
            case NOT_FOUND -> HttpStatus.NOT_FOUND;
            case ALREADY_EXISTS, ABORTED -> HttpStatus.CONFLICT;
            case RESOURCE_EXHAUSTED -> HttpStatus.TOO_MANY_REQUESTS;
            case CANCELLED -> HttpStatus.valueOf(499);
            case UNAVAILABLE -> HttpStatus.SERVICE_UNAVAILABLE;
            case DEADLINE_EXCEEDED -> HttpStatus.GATEWAY_TIMEOUT;
            case UNIMPLEMENTED -> HttpStatus.NOT_IMPLEMENTED;
            default -> HttpStatus.INTERNAL_SERVER_ERROR;
        };
    }
}
