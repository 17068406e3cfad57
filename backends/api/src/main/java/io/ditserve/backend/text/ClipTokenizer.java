package io.ditserve.backend.text;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.BackendException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * CLIP's byte-level BPE tokenizer (transformers' CLIPTokenizer without ftfy), read from a diffusers
 * {@code tokenizer/} folder: {@code vocab.json}, {@code merges.txt}, {@code tokenizer_config.json} and
 * {@code special_tokens_map.json}. Written from the algorithm as tools/sd3/clip_bpe.py states it and proven equal to
 * that reference on the prompt corpus (docs/TEXT_MODELS.md, "Tokenizers"):
 *
 * <ol>
 *   <li>Cleanup: drop NUL, U+FFFD and Unicode category C* (except tab, newline, CR, which like category Zs become a
 *       space); a space around each CJK ideograph; NFC; split on Python's whitespace; each word lower-cased
 *       ({@code str.lower}, here {@link String#toLowerCase(Locale)} with the root locale); words joined by one space.
 *   <li>Pieces by CLIP's regex ({@code <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
 *       [^\s\p{L}\p{N}]+}, case-insensitive), matched by hand here so that the case-insensitive corners of Python's
 *       {@code regex} module hold: "ſ" (U+017F) matches "s", and U+0345 (which case-folds to a letter but is not
 *       one) belongs to no class and is dropped.
 *   <li>Each piece's UTF-8 bytes as GPT-2's printable byte characters, {@code </w>} on the last, merged by the
 *       lowest-ranked merge present until none applies; the two special strings are their tokens.
 *   <li>{@code <|startoftext|>} + ids[:max − 2] + {@code <|endoftext|>}, padded to max with the configured pad token.
 * </ol>
 *
 * <p>Thread-safe; the BPE results of recent pieces are kept in a cache of at most {@link #CACHE_ENTRIES} entries.
 */
public final class ClipTokenizer implements Tokenizer {
    public static final String BOS = "<|startoftext|>";
    public static final String EOS = "<|endoftext|>";
    /** transformers' CLIPTokenizer reads at most this many merges (the lines after the header). */
    public static final int MAX_MERGES = 49152 - 256 - 2;
    /** Entries of the BPE cache: pieces → ids, least recently used dropped first. */
    public static final int CACHE_ENTRIES = 20_000;
    /** The default length: CLIP's 77 positions. */
    public static final int DEFAULT_MAX_LENGTH = 77;

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String END_OF_WORD = "</w>";
    private static final char[] BYTE_CHARS = byteChars();

    private final Map<String, Integer> vocab;
    private final Map<String, Integer> ranks; // "a b" → rank (tokens never contain a space)
    private final int maxLength;
    private final int bosId;
    private final int eosId;
    private final int padId;
    private final int unkId;
    private final Map<String, int[]> cache = new LinkedHashMap<>(256, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, int[]> eldest) {
            return size() > CACHE_ENTRIES;
        }
    };

    /**
     * @param vocab token → id
     * @param merges the merges, best first (pairs of tokens); only the first {@link #MAX_MERGES} are used
     * @param maxLength the padded length (at least 2)
     */
    public ClipTokenizer(Map<String, Integer> vocab, List<String[]> merges, int maxLength, String bos, String eos,
            String pad, String unk) {
        if (maxLength < 2) {
            throw new IllegalArgumentException("max length " + maxLength + " leaves no room for BOS and EOS");
        }
        this.vocab = Map.copyOf(vocab);
        Map<String, Integer> r = new HashMap<>();
        for (int i = 0; i < Math.min(merges.size(), MAX_MERGES); i++) {
            String[] m = merges.get(i);
            r.putIfAbsent(m[0] + " " + m[1], i);
        }
        this.ranks = r;
        this.maxLength = maxLength;
        this.bosId = id("bos_token", bos);
        this.eosId = id("eos_token", eos);
        this.padId = id("pad_token", pad);
        this.unkId = id("unk_token", unk);
    }

    private int id(String what, String token) {
        Integer id = vocab.get(token);
        if (id == null) {
            throw new IllegalArgumentException(what + " '" + token + "' is not in the vocabulary");
        }
        return id;
    }

    /**
     * Reads a CLIPTokenizer folder. The special tokens come from special_tokens_map.json overridden by
     * tokenizer_config.json (each a string or {"content": …}; null keeps the default: bos {@value #BOS}, eos, pad
     * and unk {@value #EOS}); SD3's tokenizer_2 names "!" as its pad token, which this honours.
     *
     * @param maxLength the padded length; 0 takes model_max_length from tokenizer_config.json (default 77)
     */
    public static ClipTokenizer load(Path dir, int maxLength) throws BackendException {
        Path vocabFile = dir.resolve("vocab.json");
        Path mergesFile = dir.resolve("merges.txt");
        Map<String, Integer> vocab;
        try {
            vocab = JSON.readValue(Files.readString(vocabFile, StandardCharsets.UTF_8), new TypeReference<>() {});
        } catch (NoSuchFileException e) {
            throw new BackendException(vocabFile + ": missing (a CLIPTokenizer folder holds vocab.json and merges.txt)");
        } catch (IOException e) {
            throw new BackendException(vocabFile + ": not a JSON object of token → id: " + e.getMessage(), e);
        }
        List<String[]> merges = new ArrayList<>();
        try {
            String[] lines = Files.readString(mergesFile, StandardCharsets.UTF_8).strip().split("\n");
            // line 0 is the "#version" header; transformers reads lines 1 … MAX_MERGES
            for (int i = 1; i < lines.length && merges.size() < MAX_MERGES; i++) {
                String line = lines[i].strip();
                if (line.isEmpty()) {
                    continue;
                }
                String[] pair = line.split("\\s+");
                if (pair.length != 2) {
                    throw new BackendException(mergesFile + ": line " + (i + 1) + " is not a pair of tokens: '"
                            + line + "'");
                }
                merges.add(pair);
            }
        } catch (NoSuchFileException e) {
            throw new BackendException(mergesFile + ": missing (a CLIPTokenizer folder holds vocab.json and merges.txt)");
        } catch (IOException e) {
            throw new BackendException(mergesFile + ": cannot read: " + e.getMessage(), e);
        }
        TokenizerConfig cfg = TokenizerConfig.read(dir);
        int length = maxLength > 0 ? maxLength : cfg.modelMaxLength(DEFAULT_MAX_LENGTH);
        try {
            return new ClipTokenizer(vocab, merges, length, cfg.special("bos_token", BOS),
                    cfg.special("eos_token", EOS), cfg.special("pad_token", EOS), cfg.special("unk_token", EOS));
        } catch (IllegalArgumentException e) {
            throw new BackendException(dir + ": " + e.getMessage());
        }
    }

    @Override
    public int maxLength() {
        return maxLength;
    }

    public int bosId() {
        return bosId;
    }

    public int eosId() {
        return eosId;
    }

    public int padId() {
        return padId;
    }

    public int vocabSize() {
        return vocab.size();
    }

    @Override
    public Tokens encode(String text) {
        int[] raw = encodeRaw(text);
        int keep = Math.min(raw.length, maxLength - 2);
        int[] ids = new int[maxLength];
        ids[0] = bosId;
        System.arraycopy(raw, 0, ids, 1, keep);
        ids[keep + 1] = eosId;
        Arrays.fill(ids, keep + 2, maxLength, padId);
        return new Tokens(ids, keep + 2, raw.length > maxLength - 2);
    }

    /** The ids of the text without BOS and EOS, untruncated. */
    public int[] encodeRaw(String text) {
        List<int[]> parts = new ArrayList<>();
        int n = 0;
        for (String piece : preTokenize(cleanText(text))) {
            int[] ids;
            if (piece.equals(BOS) || piece.equals(EOS)) {
                ids = new int[] {vocab.getOrDefault(piece, unkId)};
            } else {
                ids = bpe(byteEncode(piece));
            }
            parts.add(ids);
            n += ids.length;
        }
        int[] out = new int[n];
        int at = 0;
        for (int[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }

    /** The BPE tokens (as strings) of the text, for inspection. */
    public List<String> tokenize(String text) {
        Map<Integer, String> byId = new HashMap<>();
        vocab.forEach((t, i) -> byId.put(i, t));
        List<String> out = new ArrayList<>();
        for (int id : encodeRaw(text)) {
            out.add(byId.get(id));
        }
        return out;
    }

    private int[] bpe(String piece) {
        synchronized (cache) {
            int[] hit = cache.get(piece);
            if (hit != null) {
                return hit;
            }
        }
        List<String> word = new ArrayList<>(piece.length());
        for (int i = 0; i < piece.length(); i++) {
            word.add(i == piece.length() - 1 ? piece.charAt(i) + END_OF_WORD : String.valueOf(piece.charAt(i)));
        }
        while (word.size() > 1) {
            int best = Integer.MAX_VALUE;
            String first = null;
            String second = null;
            for (int i = 0; i + 1 < word.size(); i++) {
                Integer r = ranks.get(word.get(i) + " " + word.get(i + 1));
                if (r != null && r < best) {
                    best = r;
                    first = word.get(i);
                    second = word.get(i + 1);
                }
            }
            if (first == null) {
                break;
            }
            List<String> merged = new ArrayList<>(word.size());
            for (int i = 0; i < word.size(); i++) {
                if (i + 1 < word.size() && word.get(i).equals(first) && word.get(i + 1).equals(second)) {
                    merged.add(first + second);
                    i++;
                } else {
                    merged.add(word.get(i));
                }
            }
            word = merged;
        }
        int[] ids = new int[word.size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = vocab.getOrDefault(word.get(i), unkId);
        }
        synchronized (cache) {
            cache.put(piece, ids);
        }
        return ids;
    }

    /** The piece's UTF-8 bytes as GPT-2's printable characters (one char each, all in the BMP). */
    static String byteEncode(String piece) {
        byte[] bytes = piece.getBytes(StandardCharsets.UTF_8);
        char[] out = new char[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            out[i] = BYTE_CHARS[bytes[i] & 0xff];
        }
        return new String(out);
    }

    /** GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 for U+0100 … U+0143. */
    private static char[] byteChars() {
        char[] table = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char) b : (char) (256 + n++);
        }
        return table;
    }

    // -- cleanup ------------------------------------------------------------------------------------------------

    /** Step 1: transformers' cleanup without ftfy (see the class comment). */
    public static String cleanText(String text) {
        StringBuilder out = new StringBuilder(text.length() + 8);
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == 0 || cp == 0xFFFD) {
                continue;
            }
            int type = Character.getType(cp);
            if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || type == Character.SPACE_SEPARATOR) {
                out.append(' ');
            } else if (type == Character.CONTROL || type == Character.FORMAT || type == Character.PRIVATE_USE
                    || type == Character.SURROGATE || type == Character.UNASSIGNED) {
                continue;
            } else if (isCjk(cp)) {
                out.append(' ').appendCodePoint(cp).append(' ');
            } else {
                out.appendCodePoint(cp);
            }
        }
        String nfc = Normalizer.normalize(out, Normalizer.Form.NFC);
        StringBuilder joined = new StringBuilder(nfc.length());
        int start = -1;
        for (int i = 0; i <= nfc.length(); ) {
            int cp = i < nfc.length() ? nfc.codePointAt(i) : ' ';
            boolean space = i >= nfc.length() || isPythonWhitespace(cp);
            if (space && start >= 0) {
                if (!joined.isEmpty()) {
                    joined.append(' ');
                }
                joined.append(nfc.substring(start, i).toLowerCase(Locale.ROOT));
                start = -1;
            } else if (!space && start < 0) {
                start = i;
            }
            i += i < nfc.length() ? Character.charCount(cp) : 1;
        }
        return joined.toString();
    }

    /** The ideograph ranges transformers' BasicTokenizer spaces out (CJK Unified Ideographs and extensions). */
    static boolean isCjk(int cp) {
        return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF)
                || (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F)
                || (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF)
                || (cp >= 0x2F800 && cp <= 0x2FA1F);
    }

    /** Python's str.isspace() (what str.split() splits on), and the regex module's \s. */
    static boolean isPythonWhitespace(int cp) {
        return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680
                || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F
                || cp == 0x3000;
    }

    // -- pre-tokenization ---------------------------------------------------------------------------------------

    private static final String[] CONTRACTIONS = {"s", "t", "re", "ve", "m", "ll", "d"};

    /** Step 2: the pieces CLIP's regex finds in cleaned text, in order. */
    public static List<String> preTokenize(String text) {
        List<String> out = new ArrayList<>();
        int i = 0;
        int n = text.length();
        while (i < n) {
            int len = matchFolded(text, i, BOS);
            if (len == 0) {
                len = matchFolded(text, i, EOS);
            }
            if (len == 0 && text.charAt(i) == '\'') {
                for (String c : CONTRACTIONS) {
                    int m = matchFolded(text, i + 1, c);
                    if (m > 0) {
                        len = m + 1;
                        break;
                    }
                }
            }
            int cp = text.codePointAt(i);
            if (len == 0 && isLetter(cp)) {
                int j = i;
                while (j < n && isLetter(text.codePointAt(j))) {
                    j += Character.charCount(text.codePointAt(j));
                }
                len = j - i;
            } else if (len == 0 && isNumber(cp)) {
                len = Character.charCount(cp);
            } else if (len == 0 && isOther(cp)) {
                int j = i;
                while (j < n && isOther(text.codePointAt(j))) {
                    j += Character.charCount(text.codePointAt(j));
                }
                len = j - i;
            }
            if (len == 0) { // whitespace, or U+0345: in no class, skipped like regex.findall skips it
                i += Character.charCount(cp);
            } else {
                out.add(text.substring(i, i + len));
                i += len;
            }
        }
        return out;
    }

    /**
     * The length of {@code literal} (ASCII lower case) at {@code at}, matched as Python's regex IGNORECASE does
     * (simple case folding: a letter matches either case, and "s" also matches "ſ"), or 0.
     */
    private static int matchFolded(String text, int at, String literal) {
        if (at + literal.length() > text.length()) {
            return 0;
        }
        for (int k = 0; k < literal.length(); k++) {
            char c = text.charAt(at + k);
            char l = literal.charAt(k);
            boolean same = c == l || (l >= 'a' && l <= 'z' && c == l - 32) || (l == 's' && c == '\u017F');
            if (!same) {
                return 0;
            }
        }
        return literal.length();
    }

    private static boolean isLetter(int cp) {
        return Character.isLetter(cp);
    }

    private static boolean isNumber(int cp) {
        int t = Character.getType(cp);
        return t == Character.DECIMAL_DIGIT_NUMBER || t == Character.LETTER_NUMBER || t == Character.OTHER_NUMBER;
    }

    private static boolean isOther(int cp) {
        return !isPythonWhitespace(cp) && !isLetter(cp) && !isNumber(cp) && cp != 0x0345;
    }
}
