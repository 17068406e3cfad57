package io.ditserve.server.web;

import com.linecorp.armeria.common.HttpResponse;
import com.linecorp.armeria.common.HttpStatus;
import com.linecorp.armeria.common.MediaType;
import com.linecorp.armeria.server.HttpService;
import com.linecorp.armeria.server.file.FileService;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The page at {@code /}: the files that {@code web/build.sh} writes to {@code web/dist/} (index.html, the bundled
 * script and style; nothing from a CDN). The folder is {@code $DIT_WEB_DIST} when set, else {@code web/dist} of the
 * checkout this server's classes were built in. Without a built page, {@code /} says how to build it.
 */
final class Page {
    private Page() {}

    /** The built page's folder, or null. */
    static Path dist() {
        String env = System.getenv("DIT_WEB_DIST");
        if (env != null && !env.isBlank()) {
            return Path.of(env);
        }
        try {
            // server/target/classes (or a jar in server/target/) → the checkout's root
            Path p = Path.of(Page.class.getProtectionDomain().getCodeSource().getLocation().toURI());
            for (int i = 0; i < 5 && p != null; i++, p = p.getParent()) {
                if (Files.isRegularFile(p.resolve("web/dist/index.html"))) {
                    return p.resolve("web/dist");
                }
            }
        } catch (URISyntaxException | RuntimeException e) {
            // no code source (an unusual class loader): no page
        }
        return null;
    }

    static HttpService service() {
        Path dist = dist();
        if (dist == null || !Files.isRegularFile(dist.resolve("index.html"))) {
            return (ctx, req) -> HttpResponse.of(HttpStatus.NOT_FOUND, MediaType.HTML_UTF_8,
                    "<!doctype html><title>ditserve</title><p>The page is not built: run <code>bash web/build.sh"
                            + "</code> (needs Node.js and npm) and restart the server. gRPC-Web and the OpenAI "
                            + "Images API (<code>/v1/</code>) are served all the same.</p>");
        }
        // no-cache: a rebuilt page is picked up on reload (revalidated by ETag, so unchanged files are not resent)
        return FileService.builder(dist).cacheControl("no-cache").autoDecompress(false).build();
    }
}
