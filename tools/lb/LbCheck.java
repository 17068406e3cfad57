// The client side of tools/lb_test.sh, compiled there with tools/failover/Failover.java against the server's class
// path and run as
//   java -cp 'target/lb/check:server/target/classes:server/target/lib/*' LbCheck MODE LB_PORT PORT_A PORT_B PID_B
// MODE spread-kill: calls through the proxy are spread over both replicas; kill -9 of replica B under streams
//   (Failover.killUnderStreams).
// MODE drain: the new replica B gets calls again, then SIGTERM to it under streams (Failover.drainUnderStreams).
import io.ditserve.client.DitClient;

public class LbCheck {
    public static void main(String[] args) throws Exception {
        Failover.name = "lb_test";
        String mode = args[0];
        int lb = Integer.parseInt(args[1]);
        ProcessHandle replicaB = ProcessHandle.of(Long.parseLong(args[4])).orElseThrow();
        try (DitClient proxy = DitClient.connect("127.0.0.1:" + lb);
             DitClient a = DitClient.connect("127.0.0.1:" + args[2]);
             DitClient b = DitClient.connect("127.0.0.1:" + args[3])) {
            switch (mode) {
                case "spread-kill" -> {
                    Failover.spread(proxy, a, b);
                    Failover.killUnderStreams(proxy, a, b, "kill -9 replica B", replicaB::destroyForcibly);
                }
                case "drain" -> {
                    // the proxy left the address of the killed replica out for its fail_timeout
                    Failover.untilBGetsCalls(proxy, b, 30);
                    Failover.drainUnderStreams(proxy, a, b, "SIGTERM to replica B", replicaB::destroy);
                }
                default -> throw new IllegalArgumentException(mode);
            }
        }
        System.out.println("lb_test: " + mode + " passed");
        System.exit(0);
    }
}
