package io.ditserve.backend.text;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.BackendException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.zip.GZIPInputStream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java tokenizers against the references on the whole prompt corpus (tools/text/prompt_corpus.py): CLIP against
 * tools/sd3/clip_bpe.py, T5 against python3-sentencepiece, with the vocabularies trained by
 * tools/text/make_tokenizer_fixtures.py (tools/fixtures/tokenizers/).
 */
class TokenizerParityTest {
    private static Path dir;
    private static JsonNode expected;
    private static List<String> prompts;

    static Path repoRoot() {
        String prop = System.getProperty("repo.root");
        if (prop != null && Files.isDirectory(Path.of(prop, "tools", "fixtures"))) {
            return Path.of(prop);
        }
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve("tools/fixtures"))) {
                return p;
            }
        }
        throw new IllegalStateException("no tools/fixtures above " + Path.of("").toAbsolutePath());
    }

    @BeforeAll
    static void load() throws IOException {
        dir = repoRoot().resolve("tools/fixtures/tokenizers");
        try (InputStream in = new GZIPInputStream(Files.newInputStream(dir.resolve("expected.json.gz")))) {
            expected = new ObjectMapper().readTree(in);
        }
        prompts = new ArrayList<>();
        expected.get("prompts").forEach(p -> prompts.add(p.asText()));
        assertThat(prompts).hasSizeGreaterThanOrEqualTo(1000);
    }

    private static int[] ints(JsonNode arr) {
        int[] out = new int[arr.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = arr.get(i).asInt();
        }
        return out;
    }

    private static String show(String s) {
        StringBuilder b = new StringBuilder();
        s.codePoints().limit(80).forEach(cp -> {
            if (cp < 0x20 || cp > 0x7e) {
                b.append(String.format("\\u{%x}", cp));
            } else {
                b.appendCodePoint(cp);
            }
        });
        return b.toString();
    }

    @Test
    void clipEqualsReferenceOnTheCorpus() throws BackendException {
        ClipTokenizer tok = ClipTokenizer.load(dir.resolve("clip"), 0);
        JsonNode ref = expected.get("clip");
        int max = ref.get("max_length").asInt();
        assertThat(tok.maxLength()).isEqualTo(max);
        assertThat(tok.bosId()).isEqualTo(ref.get("bos_id").asInt());
        assertThat(tok.eosId()).isEqualTo(ref.get("eos_id").asInt());
        assertThat(tok.padId()).isEqualTo(ref.get("pad_id").asInt());
        List<String> failures = new ArrayList<>();
        int tokens = 0;
        int truncated = 0;
        for (int i = 0; i < prompts.size(); i++) {
            int[] raw = ints(ref.get("raw").get(i));
            tokens += raw.length;
            int[] got = tok.encodeRaw(prompts.get(i));
            Tokenizer.Tokens t = tok.encode(prompts.get(i));
            int keep = Math.min(raw.length, max - 2);
            int[] padded = new int[max];
            Arrays.fill(padded, tok.padId());
            padded[0] = tok.bosId();
            System.arraycopy(raw, 0, padded, 1, keep);
            padded[keep + 1] = tok.eosId();
            boolean cut = ref.get("truncated").get(i).asBoolean();
            truncated += cut ? 1 : 0;
            if (!Arrays.equals(got, raw) || !Arrays.equals(t.ids(), padded) || t.truncated() != cut
                    || t.count() != keep + 2) {
                failures.add(i + " " + show(prompts.get(i)) + "\n  ref  " + Arrays.toString(raw) + "\n  java "
                        + Arrays.toString(got));
            }
        }
        System.out.printf("CLIP BPE: %d/%d prompts equal (%d tokens, %d truncated at %d)%n",
                prompts.size() - failures.size(), prompts.size(), tokens, truncated, max);
        assertThat(failures).as(String.join("\n", failures.subList(0, Math.min(5, failures.size())))).isEmpty();
    }

    @Test
    void t5EqualsSentencePieceOnTheCorpus() throws BackendException {
        T5Tokenizer tok = T5Tokenizer.load(dir.resolve("t5"), 0);
        JsonNode ref = expected.get("t5");
        int max = ref.get("max_length").asInt();
        assertThat(tok.maxLength()).isEqualTo(max);
        assertThat(tok.eosId()).isEqualTo(ref.get("eos_id").asInt()).isEqualTo(1);
        assertThat(tok.padId()).isEqualTo(ref.get("pad_id").asInt()).isEqualTo(0);
        List<String> failures = new ArrayList<>();
        int tokens = 0;
        int truncated = 0;
        int unknown = 0;
        for (int i = 0; i < prompts.size(); i++) {
            int[] raw = ints(ref.get("raw").get(i));
            tokens += raw.length;
            unknown += (int) Arrays.stream(raw).filter(id -> id == tok.model().unkId()).count();
            int[] got = tok.model().encode(prompts.get(i));
            Tokenizer.Tokens t = tok.encode(prompts.get(i));
            int keep = Math.min(raw.length, max - 1);
            int[] padded = new int[max];
            Arrays.fill(padded, tok.padId());
            System.arraycopy(raw, 0, padded, 0, keep);
            padded[keep] = tok.eosId();
            boolean cut = ref.get("truncated").get(i).asBoolean();
            truncated += cut ? 1 : 0;
            if (!Arrays.equals(got, raw) || !Arrays.equals(t.ids(), padded) || t.truncated() != cut
                    || t.count() != keep + 1) {
                failures.add(i + " " + show(prompts.get(i)) + "\n  norm " + show(tok.model().normalize(prompts.get(i)))
                        + "\n  ref  " + Arrays.toString(raw) + "\n  java " + Arrays.toString(got));
            }
        }
        System.out.printf("T5 SentencePiece: %d/%d prompts equal (%d tokens, %d <unk>, %d truncated at %d)%n",
                prompts.size() - failures.size(), prompts.size(), tokens, unknown, truncated, max);
        assertThat(failures).as(String.join("\n", failures.subList(0, Math.min(5, failures.size())))).isEmpty();
    }

    @Test
    void clipPadTokenComesFromTheFolder(@TempDir Path tmp) throws Exception {
        for (String f : new String[] {"vocab.json", "merges.txt", "special_tokens_map.json"}) {
            Files.copy(dir.resolve("clip").resolve(f), tmp.resolve(f));
        }
        // SD3's tokenizer_2: pads with "!" (id 0 in CLIP's vocabulary order)
        String cfg = Files.readString(dir.resolve("clip/tokenizer_config.json"))
                .replace("\"pad_token\": \"<|endoftext|>\"", "\"pad_token\": \"!\"");
        Files.writeString(tmp.resolve("tokenizer_config.json"), cfg);
        ClipTokenizer tok = ClipTokenizer.load(tmp, 0);
        assertThat(tok.padId()).isEqualTo(0);
        Tokenizer.Tokens t = tok.encode("a red cube");
        assertThat(t.ids()[t.count() - 1]).isEqualTo(tok.eosId());
        assertThat(Arrays.copyOfRange(t.ids(), t.count(), 77)).containsOnly(0);
        // an explicit length overrides model_max_length
        assertThat(ClipTokenizer.load(tmp, 16).encode("a red cube").ids()).hasSize(16);
    }

    @Test
    void factoryPicksTheTokenizerByFolder(@TempDir Path tmp) throws Exception {
        assertThat(Tokenizers.load(dir.resolve("clip"), 0)).isInstanceOf(ClipTokenizer.class);
        assertThat(Tokenizers.load(dir.resolve("t5"), 300)).isInstanceOf(T5Tokenizer.class)
                .extracting(Tokenizer::maxLength).isEqualTo(300);
        Files.writeString(tmp.resolve("tokenizer.json"), "{}");
        assertThatThrownBy(() -> Tokenizers.load(tmp, 0)).isInstanceOf(BackendException.class)
                .hasMessageContaining("only tokenizer.json").hasMessageContaining("spiece.model");
        Files.writeString(tmp.resolve("tokenizer_config.json"), "{\"tokenizer_class\": \"LlamaTokenizer\"}");
        assertThatThrownBy(() -> Tokenizers.load(tmp, 0)).isInstanceOf(BackendException.class)
                .hasMessageContaining("LlamaTokenizer");
        assertThatThrownBy(() -> Tokenizers.load(tmp.resolve("absent"), 0)).isInstanceOf(BackendException.class)
                .hasMessageContaining("missing");
    }

    @Test
    void badFilesAreNamed(@TempDir Path tmp) throws Exception {
        Files.writeString(tmp.resolve("vocab.json"), "{\"a</w>\": 0}");
        Files.writeString(tmp.resolve("merges.txt"), "#version: 0.2\na b c\n");
        assertThatThrownBy(() -> ClipTokenizer.load(tmp, 0)).isInstanceOf(BackendException.class)
                .hasMessageContaining("merges.txt").hasMessageContaining("line 2");
        Files.writeString(tmp.resolve("merges.txt"), "#version: 0.2\n");
        assertThatThrownBy(() -> ClipTokenizer.load(tmp, 0)).isInstanceOf(BackendException.class)
                .hasMessageContaining("bos_token '<|startoftext|>' is not in the vocabulary");
        Files.write(tmp.resolve("spiece.model"), new byte[] {1, 2, 3});
        assertThatThrownBy(() -> T5Tokenizer.load(tmp, 0)).isInstanceOf(BackendException.class)
                .hasMessageContaining("spiece.model");
    }

    @Test
    void clipPiecesFollowTheRegexCorners() {
        assertThat(ClipTokenizer.preTokenize("it's a 'ſ x''s <|endoftext|>ab 12 \u0345z"))
                .containsExactly("it", "'s", "a", "'ſ", "x", "''", "s", "<|endoftext|>", "ab", "1", "2", "z");
        assertThat(ClipTokenizer.cleanText("  A\tB\u00a0C\u2028d 猫\u200bX\u0000  ")).isEqualTo("a b c d 猫 x");
    }
}
