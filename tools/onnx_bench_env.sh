# Sourced by the onnx module's benchmark scripts (tools/bench_graph_cache.sh, tools/bench_sd3_shapes.sh), with ROOT
# set to the repository root. onnx_bench_build compiles the module's test classes, where the bench programs live
# (offline first, online when the local repository lacks a plugin; nothing installed), and sets ONNX_BENCH_CP to
# their class path and ONNX_BENCH_JVM to the java command they run with: JDK 25 with the vector module, and native
# access for ONNX Runtime.
onnx_bench_build() {
  echo "== build (test classes of the onnx module, nothing installed)"
  local cpfile
  cpfile="$(mktemp)"
  local args=(-B -q test-compile dependency:build-classpath -pl backends/onnx -am -Dmdep.outputFile="$cpfile"
    -Dmdep.includeScope=test)
  (cd "$ROOT" && { mvn -o "${args[@]}" >/dev/null 2>&1 || mvn "${args[@]}" >/dev/null; })
  ONNX_BENCH_CP="$ROOT/backends/onnx/target/test-classes:$ROOT/backends/onnx/target/classes:$(cat "$cpfile")"
  rm -f "$cpfile"
  ONNX_BENCH_JVM=("${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}/bin/java" --add-modules jdk.incubator.vector
    --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow)
}
