package io.ditserve.server.grpc;

import java.util.Locale;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The bytes of output the server holds for clients that have not read it yet, per client (its bearer token or IP
 * address, {@code ClientIdentity}) and per connection: events a stream has queued but not sent (finished images
 * above all) and the message the transport holds because the client's HTTP/2 window is closed. A client that opens
 * generations and never reads would otherwise pin every finished result until its delivery deadline; with
 * {@code max_undelivered_bytes_per_client} / {@code _per_connection} its next Generate call is refused
 * (RESOURCE_EXHAUSTED saying how much it holds) until it reads or cancels, so what one client pins is bounded by
 * the cap plus the results of the generations it already has running or queued. Counts are estimates of what the
 * server holds in memory (4 bytes per float of a frame, the serialized size of a held message), kept exact in sum:
 * every account returns to zero when its stream ends.
 */
public final class DeliveryLedger {
    private final long maxPerClient;
    private final long maxPerConnection;
    private final ConcurrentHashMap<String, AtomicLong> clients = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, AtomicLong> connections = new ConcurrentHashMap<>();
    private final AtomicLong total = new AtomicLong();

    /** @param maxPerClient bytes; 0 = no limit (and likewise per connection) */
    public DeliveryLedger(long maxPerClient, long maxPerConnection) {
        this.maxPerClient = maxPerClient;
        this.maxPerConnection = maxPerConnection;
    }

    /** One stream's share; {@link #set} its current holding, 0 when it ends. */
    public final class Account {
        private final String client;
        private final String connection;
        private long held;

        private Account(String client, String connection) {
            this.client = client;
            this.connection = connection;
        }

        public synchronized void set(long bytes) {
            long delta = bytes - held;
            if (delta == 0) {
                return;
            }
            held = bytes;
            total.addAndGet(delta);
            add(clients, client, delta);
            add(connections, connection, delta);
        }
    }

    /** A new stream's account; keys may be null (a call outside the interceptors: counted in the total only). */
    public Account open(String client, String connection) {
        return new Account(client, connection);
    }

    private static void add(ConcurrentHashMap<String, AtomicLong> map, String key, long delta) {
        if (key == null) {
            return;
        }
        map.compute(key, (k, v) -> {
            long now = (v == null ? 0 : v.get()) + delta;
            if (now == 0) {
                return null; // no entry for a key that holds nothing: the maps stay as small as the set of holders
            }
            if (v == null) {
                return new AtomicLong(now);
            }
            v.set(now);
            return v;
        });
    }

    public long client(String client) {
        AtomicLong v = client == null ? null : clients.get(client);
        return v == null ? 0 : v.get();
    }

    public long connection(String connection) {
        AtomicLong v = connection == null ? null : connections.get(connection);
        return v == null ? 0 : v.get();
    }

    /** Bytes held for all clients. */
    public long total() {
        return total.get();
    }

    /**
     * Null when a new call of this client on this connection may start, else why not: the limit's key and the
     * message (RESOURCE_EXHAUSTED).
     */
    public String[] refusal(String client, String connection) {
        long c = client(client);
        if (maxPerClient > 0 && c >= maxPerClient) {
            return new String[] {"undelivered_per_client", "this client has " + mb(c) + " of finished results it has"
                    + " not read (max_undelivered_bytes_per_client " + maxPerClient + "): read or cancel its other"
                    + " calls first"};
        }
        long k = connection(connection);
        if (maxPerConnection > 0 && k >= maxPerConnection) {
            return new String[] {"undelivered_per_connection", "this connection has " + mb(k) + " of finished results"
                    + " it has not read (max_undelivered_bytes_per_connection " + maxPerConnection + "): read or"
                    + " cancel its other calls first"};
        }
        return null;
    }

    private static String mb(long bytes) {
        return String.format(Locale.ROOT, "%.2f MB", bytes / 1e6);
    }
}
