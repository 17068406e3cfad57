package io.ditserve.server.engine;

import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.ListIterator;
import java.util.Map;

/**
 * Who runs next on one compute loop: the waiting queue, ordered by start-time fair queuing over clients, and each
 * client's share of the waiting and running generations. Not thread-safe: its {@link ComputeLoop} calls it while
 * holding the loop's lock.
 *
 * <p>Each generation comes with a client key (opaque; null = anonymous, all anonymous ones count as one client). One
 * client may have at most {@code maxQueuedPerClient} generations waiting. A newcomer's round is one more than the
 * later of the client's previous round and the round of the generation started last, and it waits behind every
 * generation of a lower or equal round: one client alone is served first come, first served; a client with many
 * generations waiting cannot push a newcomer of another client behind all of them. A freed slot goes to the client
 * with the fewest generations running ({@link #startNext}): one client cannot hold every running slot while another
 * waits.
 */
final class Admission {
    private final EngineConfig config;
    private final String model;
    private final EngineObserver observer;
    final LinkedList<Generation> waiting = new LinkedList<>();
    /** Each admitted generation's client and fairness round (until it leaves the loop). */
    private final Map<Generation, Ticket> tickets = new IdentityHashMap<>();
    /** Clients with generations in this loop. */
    private final Map<String, ClientShare> clients = new HashMap<>();
    /** Round of the generation that started last (start-time fair queuing's virtual time). */
    private long startedRound;

    private record Ticket(String client, long round) {}

    private static final class ClientShare {
        int active;
        int waiting;
        long lastRound;
    }

    Admission(EngineConfig config, String model, EngineObserver observer) {
        this.config = config;
        this.model = model;
        this.observer = observer;
    }

    /**
     * Admits {@code g} of {@code client}: it runs now ({@code runsNow}) or waits at its fair place. Sends its Accepted
     * event (made for its queue position by {@code acceptedAt}) first.
     *
     * @return true when it runs now (the caller adds it to the active set)
     * @throws Rejected when the queue or the client's share of it is full
     */
    boolean admit(Generation g, String client, boolean runsNow, int running,
            java.util.function.IntFunction<GenerationEvent.Accepted> acceptedAt) throws Rejected {
        String key = client == null ? "" : client;
        if (!runsNow && waiting.size() >= config.maxQueued()) {
            throw new Rejected(new Failure(Failure.Code.RESOURCE_EXHAUSTED, "server busy: " + running
                    + " generations of model " + model + " running and " + waiting.size()
                    + " queued (limit max_queued = " + config.maxQueued() + "); retry later"));
        }
        ClientShare share = clients.get(key);
        if (!runsNow && client != null && config.maxQueuedPerClient() > 0 && share != null
                && share.waiting >= config.maxQueuedPerClient()) {
            throw new Rejected(new Failure(Failure.Code.RESOURCE_EXHAUSTED, "server busy: this client already has "
                    + share.waiting + " generations of model " + model + " queued (limit "
                    + "max_queued_per_client = " + config.maxQueuedPerClient() + "); retry later"));
        }
        long round = Math.max(startedRound, share == null ? 0 : share.lastRound) + 1;
        int index = runsNow ? -1 : insertionIndex(round);
        g.listener.onEvent(acceptedAt.apply(index + 1));
        if (share == null) {
            share = new ClientShare();
            clients.put(key, share);
        }
        share.lastRound = round;
        tickets.put(g, new Ticket(key, round));
        if (runsNow) {
            share.active++;
            startedRound = Math.max(startedRound, round);
            observer.onQueueWait(model, 0);
        } else {
            waiting.add(index, g);
            share.waiting++;
            if (index < waiting.size() - 1) {
                notifyQueuePositions(index + 1); // those it went ahead of moved back by one
            }
        }
        return runsNow;
    }

    /** Where a newcomer of {@code round} waits: behind every generation of a lower or equal round. */
    private int insertionIndex(long round) {
        int i = waiting.size();
        ListIterator<Generation> it = waiting.listIterator(waiting.size());
        while (it.hasPrevious() && tickets.get(it.previous()).round() > round) {
            i--;
        }
        return i;
    }

    /** {@code g} leaves the queue ({@code fromWaiting}) or the active set. */
    void left(Generation g, boolean fromWaiting) {
        Ticket t = tickets.remove(g);
        if (t == null) {
            return;
        }
        ClientShare share = clients.get(t.client());
        if (fromWaiting) {
            share.waiting--;
        } else {
            share.active--;
        }
        if (share.waiting == 0 && share.active == 0) {
            clients.remove(t.client());
        }
    }

    /** Removes a waiting generation; returns false when it is not waiting (it runs, or has left). */
    boolean cancelWaiting(Generation g) {
        int index = waiting.indexOf(g);
        if (index < 0) {
            return false;
        }
        waiting.remove(index);
        left(g, true);
        notifyQueuePositions(index);
        return true;
    }

    /**
     * The next waiting generation to start, now moved to its client's running share, or null. Fair share of the
     * running slots: the first waiting generation of the client with the fewest running ones (queue order among
     * equals), so a client with many generations running cannot take a freed slot ahead of a client with none.
     */
    Generation startNext() {
        Generation g = null;
        int fewest = Integer.MAX_VALUE;
        for (Generation w : waiting) {
            int running = clients.get(tickets.get(w).client()).active;
            if (running < fewest) {
                fewest = running;
                g = w;
                if (running == 0) {
                    break;
                }
            }
        }
        if (g == null) {
            return null;
        }
        waiting.remove(g);
        Ticket t = tickets.get(g);
        ClientShare share = clients.get(t.client());
        share.waiting--;
        share.active++;
        startedRound = Math.max(startedRound, t.round());
        observer.onQueueWait(model, (System.nanoTime() - g.acceptedNanos) / 1e9);
        return g;
    }

    /** Tells the waiting generations from index {@code from} on their positions. */
    void notifyQueuePositions(int from) {
        ListIterator<Generation> it = waiting.listIterator(from);
        while (it.hasNext()) {
            int pos = it.nextIndex() + 1;
            it.next().listener.onEvent(new GenerationEvent.Queued(pos));
        }
    }

    /** Empties the queue and forgets every client; returns what was waiting. */
    List<Generation> clear() {
        List<Generation> all = List.copyOf(waiting);
        waiting.clear();
        tickets.clear();
        clients.clear();
        return all;
    }
}
