package io.ditserve.server.security;

import io.ditserve.server.observe.LogLimiter;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.nio.NioEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.socket.nio.NioServerSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.socket.nio.NioSocketChannel;
import io.grpc.netty.shaded.io.netty.util.concurrent.DefaultThreadFactory;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Caps on open connections, in all ({@code max_connections}) and per remote IP address
 * ({@code max_connections_per_address}), enforced where connections are accepted, before they cost a file
 * descriptor for longer than a moment or any HTTP/2 state: the gRPC port's listening channel is a
 * {@link NioServerSocketChannel} whose accept closes a connection over a cap at once, so the client's calls end
 * with UNAVAILABLE. (An HTTP/2 GOAWAY naming the limit before the close was tried: grpc-java clients then ended
 * with INTERNAL or after long retries, depending on timing, so the reason is told by the server's log and metric
 * only.) Each refusal is counted
 * ({@code dit_connections_refused_total{limit}}) and logged once per address per minute ({@link LogLimiter}).
 *
 * <p>grpc-java has no connection cap of its own; giving it a channel factory means giving it the event loops too,
 * so this class owns them: {@link #close} shuts them down after the server has stopped.
 */
public final class ConnectionLimits implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ConnectionLimits.class);

    private final int maxTotal;
    private final int maxPerAddress;
    private final Map<String, Integer> perAddress = new HashMap<>();
    private final LogLimiter logLimiter = new LogLimiter(Duration.ofMinutes(1));
    private final EventLoopGroup boss;
    private final EventLoopGroup workers;
    private int total;
    private volatile Consumer<String> onRefused = limit -> { };

    private ConnectionLimits(int maxTotal, int maxPerAddress) {
        this.maxTotal = maxTotal;
        this.maxPerAddress = maxPerAddress;
        this.boss = new NioEventLoopGroup(1, new DefaultThreadFactory("dit-accept", true));
        this.workers = new NioEventLoopGroup(0, new DefaultThreadFactory("dit-transport", true));
    }

    /** Installs the caps on {@code b} (its channel factory and event loops); null when both caps are 0 (off). */
    static ConnectionLimits install(NettyServerBuilder b, int maxTotal, int maxPerAddress) {
        if (maxTotal <= 0 && maxPerAddress <= 0) {
            return null;
        }
        ConnectionLimits limits = new ConnectionLimits(maxTotal, maxPerAddress);
        b.channelFactory(() -> limits.new Listener()).bossEventLoopGroup(limits.boss)
                .workerEventLoopGroup(limits.workers);
        return limits;
    }

    /** Told the limit ({@code total} or {@code per_address}) of each refused connection, for the metric. */
    public void onRefused(Consumer<String> listener) {
        this.onRefused = listener;
    }

    /** Connections open now (for tests and listings). */
    public synchronized int open() {
        return total;
    }

    /** The refusal's reason, or null when the connection from {@code address} is admitted (and counted). */
    private synchronized String admit(String address) {
        int mine = perAddress.getOrDefault(address, 0);
        if (maxTotal > 0 && total >= maxTotal) {
            return "total:" + total + " connections are open, the most this server takes (max_connections "
                    + maxTotal + ")";
        }
        if (maxPerAddress > 0 && mine >= maxPerAddress) {
            return "per_address:" + mine + " connections are open from your address, the most it may hold "
                    + "(max_connections_per_address " + maxPerAddress + ")";
        }
        total++;
        perAddress.put(address, mine + 1);
        return null;
    }

    private synchronized void release(String address) {
        total--;
        perAddress.computeIfPresent(address, (a, n) -> n <= 1 ? null : n - 1);
    }

    /** The listening channel: accepts like Netty's, then admits or refuses. */
    private final class Listener extends NioServerSocketChannel {
        @Override
        protected int doReadMessages(List<Object> buf) throws Exception {
            SocketChannel socket = javaChannel().accept();
            if (socket == null) {
                return 0;
            }
            String address = address(socket);
            String refusal = admit(address);
            if (refusal == null) {
                try {
                    NioSocketChannel child = new NioSocketChannel(this, socket);
                    child.closeFuture().addListener(f -> release(address));
                    buf.add(child);
                    return 1;
                } catch (RuntimeException e) {
                    release(address);
                    socket.close();
                    throw e;
                }
            }
            String limit = refusal.substring(0, refusal.indexOf(':'));
            String why = refusal.substring(limit.length() + 1);
            onRefused.accept(limit);
            String suffix = logLimiter.admit(limit + " " + address);
            if (suffix != null) {
                log.warn("connection from {} refused: {}{}", address, why, suffix);
            }
            closeQuietly(socket);
            return 0;
        }
    }

    private static String address(SocketChannel socket) {
        try {
            return ClientIdentity.host((InetSocketAddress) socket.getRemoteAddress());
        } catch (IOException | RuntimeException e) {
            return "unknown";
        }
    }

    private static void closeQuietly(SocketChannel s) {
        if (s != null) {
            try {
                s.close();
            } catch (IOException e) {
                // closing a refused connection: nothing to tell
            }
        }
    }

    /** Shuts the event loops down; call after the server has terminated. */
    @Override
    public void close() {
        boss.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        workers.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }
}
