package io.ditserve.backend.text;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.WireFormat;
import io.ditserve.backend.BackendException;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A SentencePiece unigram model ({@code spiece.model}, a serialized {@code sentencepiece.ModelProto}) and its
 * encoder, written from SentencePiece's algorithm and proven equal to Debian's python3-sentencepiece on the prompt
 * corpus (docs/TEXT_MODELS.md, "Tokenizers").
 *
 * <p>Only the fields encoding needs are read, with protobuf's {@link CodedInputStream} (no generated schema):
 * ModelProto.pieces (1: piece 1, score 2, type 3), trainer_spec (2: model_type 3, treat_whitespace_as_suffix 24,
 * byte_fallback 35) and normalizer_spec (3: name 1, precompiled_charsmap 2, add_dummy_prefix 3,
 * remove_extra_whitespaces 4, escape_whitespaces 5). Unknown fields are skipped, as protobuf does.
 *
 * <p>Encoding, as SentencePiece 0.1.9x does it:
 * <ol>
 *   <li>Normalization over the UTF-8 bytes: at each position the longest user-defined symbol is kept as it is;
 *       else the longest rule of the precompiled character map (a Darts double-array trie over UTF-8 bytes, then
 *       the NUL-separated replacements) is replaced; else one UTF-8 character is copied. With
 *       remove_extra_whitespaces, leading spaces are dropped, runs of spaces become one and trailing ones go; with
 *       add_dummy_prefix a space is put in front; with escape_whitespaces every space becomes "▁" (U+2581).
 *   <li>The best segmentation by the unigram scores (Viterbi over byte positions, one UTF-8 character at a time, as
 *       the optimized encoder does: a candidate replaces the best path ending at a position only when its
 *       score is strictly higher, so on ties the earlier start wins; a piece's candidate is the double sum of
 *       its score and the float best score where it starts, compared in double with the float stored at its end,
 *       as SentencePiece's C++ types make it — this decides ties that float sums would make): every vocabulary
 *       piece (normal, user-defined; unused ones skipped) that starts at the position is a candidate, a
 *       user-defined one scoring length·max_score − 0.1; a character that no one-character piece covers is
 *       {@code <unk>} scoring min_score − 10 (a float sum). A run of consecutive unknown characters gives one
 *       {@code <unk>} id, as SentencePieceProcessor joins them.
 * </ol>
 * Byte fallback and whitespace-as-suffix models are refused (T5's model uses neither).
 */
public final class SentencePieceModel {
    /** ModelProto.SentencePiece.Type */
    static final int NORMAL = 1;
    static final int UNKNOWN = 2;
    static final int CONTROL = 3;
    static final int USER_DEFINED = 4;
    static final int UNUSED = 5;
    static final int BYTE = 6;
    private static final int UNIGRAM = 1;
    private static final float UNK_PENALTY = 10f;
    private static final byte[] SPACE_SYMBOL = "\u2581".getBytes(StandardCharsets.UTF_8);
    private static final byte[] REPLACEMENT = "\uFFFD".getBytes(StandardCharsets.UTF_8);

    /** One vocabulary entry. */
    public record Piece(String piece, float score, int type) {}

    private final List<Piece> pieces;
    private final Map<String, Integer> byText = new HashMap<>();
    /** Pieces the lattice may use (normal, user-defined, unused), by their UTF-8 bytes as Latin-1 strings. */
    private final Map<String, Integer> lattice = new HashMap<>();
    private final Map<String, Integer> userDefined = new HashMap<>(); // Latin-1 keys as above
    private final int maxPieceBytes;
    private final int maxUserDefinedBytes;
    private final int unkId;
    private final float minScore;
    private final float maxScore;
    private final String normalizerName;
    private final int[] trie; // Darts units, or null
    private final byte[] replacements;
    private final boolean addDummyPrefix;
    private final boolean removeExtraWhitespaces;
    private final boolean escapeWhitespaces;

    private SentencePieceModel(List<Piece> pieces, Trainer trainer, Normalizer norm, Path file)
            throws BackendException {
        if (trainer.modelType != UNIGRAM) {
            throw new BackendException(file + ": model_type " + trainer.modelType
                    + " is not UNIGRAM (1); only unigram SentencePiece models (T5's) are supported");
        }
        if (trainer.byteFallback) {
            throw new BackendException(file + ": byte_fallback models are not supported (T5's model has none)");
        }
        if (trainer.whitespaceAsSuffix) {
            throw new BackendException(file + ": treat_whitespace_as_suffix models are not supported");
        }
        this.pieces = List.copyOf(pieces);
        int unk = -1;
        int maxBytes = 0;
        int maxUser = 0;
        float min = Float.MAX_VALUE;
        float max = Float.MIN_NORMAL; // SentencePiece starts at FLT_MIN: it stays ~1e-38 when every score is negative
        for (int i = 0; i < pieces.size(); i++) {
            Piece p = pieces.get(i);
            if (byText.putIfAbsent(p.piece(), i) != null) {
                throw new BackendException(file + ": piece '" + p.piece() + "' is defined twice");
            }
            if (p.type() == UNKNOWN) {
                unk = i;
            }
            if (p.type() == BYTE) {
                throw new BackendException(file + ": byte pieces (byte_fallback) are not supported");
            }
            if (p.type() == NORMAL || p.type() == USER_DEFINED || p.type() == UNUSED) {
                String key = latin1(p.piece().getBytes(StandardCharsets.UTF_8));
                lattice.put(key, i);
                maxBytes = Math.max(maxBytes, key.length());
                if (p.type() == USER_DEFINED) {
                    userDefined.put(key, i);
                    maxUser = Math.max(maxUser, key.length());
                }
            }
            if (p.type() == NORMAL) {
                min = Math.min(min, p.score());
                max = Math.max(max, p.score());
            }
        }
        if (unk < 0) {
            throw new BackendException(file + ": no <unk> piece (type UNKNOWN)");
        }
        this.unkId = unk;
        this.maxPieceBytes = maxBytes;
        this.maxUserDefinedBytes = maxUser;
        this.minScore = min == Float.MAX_VALUE ? 0f : min;
        this.maxScore = max;
        this.normalizerName = norm.name;
        this.addDummyPrefix = norm.addDummyPrefix;
        this.removeExtraWhitespaces = norm.removeExtraWhitespaces;
        this.escapeWhitespaces = norm.escapeWhitespaces;
        if (norm.charsmap.length == 0) {
            this.trie = null;
            this.replacements = new byte[0];
        } else {
            ByteBuffer bb = ByteBuffer.wrap(norm.charsmap).order(ByteOrder.LITTLE_ENDIAN);
            if (norm.charsmap.length < 4) {
                throw new BackendException(file + ": precompiled_charsmap of " + norm.charsmap.length + " bytes");
            }
            long trieBytes = bb.getInt() & 0xffffffffL;
            if (trieBytes % 4 != 0 || trieBytes > norm.charsmap.length - 4) {
                throw new BackendException(file + ": precompiled_charsmap says its trie has " + trieBytes
                        + " bytes, of " + (norm.charsmap.length - 4));
            }
            this.trie = new int[(int) (trieBytes / 4)];
            bb.asIntBuffer().get(trie);
            this.replacements = Arrays.copyOfRange(norm.charsmap, 4 + (int) trieBytes, norm.charsmap.length);
        }
    }

    /** Reads and validates {@code spiece.model}. */
    public static SentencePieceModel read(Path file) throws BackendException {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing");
        } catch (IOException e) {
            throw new BackendException(file + ": cannot read: " + e.getMessage(), e);
        }
        try {
            return parse(bytes, file);
        } catch (IOException e) {
            throw new BackendException(file + ": not a SentencePiece ModelProto: " + e.getMessage(), e);
        }
    }

    private static final class Trainer {
        int modelType = UNIGRAM;
        boolean byteFallback;
        boolean whitespaceAsSuffix;
    }

    private static final class Normalizer {
        String name = "";
        byte[] charsmap = new byte[0];
        boolean addDummyPrefix = true;
        boolean removeExtraWhitespaces = true;
        boolean escapeWhitespaces = true;
    }

    private static SentencePieceModel parse(byte[] bytes, Path file) throws IOException, BackendException {
        CodedInputStream in = CodedInputStream.newInstance(bytes);
        List<Piece> pieces = new ArrayList<>();
        Trainer trainer = new Trainer();
        Normalizer norm = new Normalizer();
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            int field = WireFormat.getTagFieldNumber(tag);
            int wire = WireFormat.getTagWireType(tag);
            if (wire != WireFormat.WIRETYPE_LENGTH_DELIMITED || field < 1 || field > 3) {
                in.skipField(tag);
                continue;
            }
            int limit = in.pushLimit(in.readRawVarint32());
            switch (field) {
                case 1 -> pieces.add(readPiece(in));
                case 2 -> readTrainer(in, trainer);
                default -> readNormalizer(in, norm);
            }
            in.popLimit(limit);
        }
        if (pieces.isEmpty()) {
            throw new BackendException(file + ": no pieces (not a SentencePiece model?)");
        }
        return new SentencePieceModel(pieces, trainer, norm, file);
    }

    private static Piece readPiece(CodedInputStream in) throws IOException {
        String piece = "";
        float score = 0f;
        int type = NORMAL;
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            switch (tag) {
                case (1 << 3) | WireFormat.WIRETYPE_LENGTH_DELIMITED -> piece = in.readStringRequireUtf8();
                case (2 << 3) | WireFormat.WIRETYPE_FIXED32 -> score = in.readFloat();
                case (3 << 3) | WireFormat.WIRETYPE_VARINT -> type = in.readEnum();
                default -> in.skipField(tag);
            }
        }
        return new Piece(piece, score, type);
    }

    private static void readTrainer(CodedInputStream in, Trainer t) throws IOException {
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            switch (tag) {
                case (3 << 3) | WireFormat.WIRETYPE_VARINT -> t.modelType = in.readEnum();
                case (24 << 3) | WireFormat.WIRETYPE_VARINT -> t.whitespaceAsSuffix = in.readBool();
                case (35 << 3) | WireFormat.WIRETYPE_VARINT -> t.byteFallback = in.readBool();
                default -> in.skipField(tag);
            }
        }
    }

    private static void readNormalizer(CodedInputStream in, Normalizer n) throws IOException {
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            switch (tag) {
                case (1 << 3) | WireFormat.WIRETYPE_LENGTH_DELIMITED -> n.name = in.readString();
                case (2 << 3) | WireFormat.WIRETYPE_LENGTH_DELIMITED -> n.charsmap = in.readByteArray();
                case (3 << 3) | WireFormat.WIRETYPE_VARINT -> n.addDummyPrefix = in.readBool();
                case (4 << 3) | WireFormat.WIRETYPE_VARINT -> n.removeExtraWhitespaces = in.readBool();
                case (5 << 3) | WireFormat.WIRETYPE_VARINT -> n.escapeWhitespaces = in.readBool();
                default -> in.skipField(tag);
            }
        }
    }

    // -- queries ------------------------------------------------------------------------------------------------

    public int size() {
        return pieces.size();
    }

    public Piece piece(int id) {
        return pieces.get(id);
    }

    /** The id of a piece by its text (any type), or −1. */
    public int id(String piece) {
        return byText.getOrDefault(piece, -1);
    }

    public int unkId() {
        return unkId;
    }

    /** The normalizer's rule name (nmt_nfkc, identity, …), for messages. */
    public String normalizerName() {
        return normalizerName;
    }

    /** The ids of {@code text}, as SentencePieceProcessor.encode gives them (no BOS/EOS). */
    public int[] encode(String text) {
        byte[] norm = normalize(text.getBytes(StandardCharsets.UTF_8));
        return viterbi(norm);
    }

    /** The normalized text (with "▁"), for inspection. */
    public String normalize(String text) {
        return new String(normalize(text.getBytes(StandardCharsets.UTF_8)), StandardCharsets.UTF_8);
    }

    // -- normalization ------------------------------------------------------------------------------------------

    /** What {@link #prefix} returns: the normalized bytes of the prefix and how many input bytes it consumed. */
    private record Prefix(byte[] out, int off, int len, int consumed) {
        boolean isSpace() {
            return len == 1 && out[off] == ' ';
        }
    }

    private byte[] normalize(byte[] input) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(input.length * 3 / 2 + 4);
        int pos = 0;
        if (removeExtraWhitespaces) {
            while (pos < input.length) {
                Prefix p = prefix(input, pos);
                if (!p.isSpace()) {
                    break;
                }
                pos += p.consumed();
            }
        }
        if (pos >= input.length) {
            return new byte[0];
        }
        if (addDummyPrefix) {
            appendSpace(out);
        }
        boolean prevSpace = removeExtraWhitespaces;
        while (pos < input.length) {
            Prefix p = prefix(input, pos);
            int off = p.off();
            int end = p.off() + p.len();
            if (prevSpace) {
                while (off < end && p.out()[off] == ' ') {
                    off++;
                }
            }
            if (off < end) {
                for (int k = off; k < end; k++) {
                    byte b = p.out()[k];
                    if (b == ' ') {
                        appendSpace(out);
                    } else {
                        out.write(b);
                    }
                }
                prevSpace = p.out()[end - 1] == ' ';
            }
            pos += p.consumed();
            if (!removeExtraWhitespaces) {
                prevSpace = false;
            }
        }
        byte[] result = out.toByteArray();
        int n = result.length;
        if (removeExtraWhitespaces) {
            byte[] space = escapeWhitespaces ? SPACE_SYMBOL : new byte[] {' '};
            while (n >= space.length && Arrays.equals(result, n - space.length, n, space, 0, space.length)) {
                n -= space.length;
            }
        }
        return n == result.length ? result : Arrays.copyOf(result, n);
    }

    private void appendSpace(ByteArrayOutputStream out) {
        if (escapeWhitespaces) {
            out.writeBytes(SPACE_SYMBOL);
        } else {
            out.write(' ');
        }
    }

    /** SentencePiece's NormalizePrefix: user-defined symbol, else the longest charsmap rule, else one character. */
    private Prefix prefix(byte[] in, int pos) {
        if (maxUserDefinedBytes > 0) {
            int longest = 0;
            for (int len = 1; len <= Math.min(maxUserDefinedBytes, in.length - pos); len++) {
                if (userDefined.containsKey(latin1(in, pos, len))) {
                    longest = len;
                }
            }
            if (longest > 0) {
                return new Prefix(in, pos, longest, longest);
            }
        }
        if (trie != null) {
            int longest = 0;
            int value = 0;
            // Darts-clone commonPrefixSearch (SentencePiece keeps at most 32 results)
            int results = 0;
            int node = 0;
            node ^= offset(trie[0]);
            for (int i = pos; i < in.length; i++) {
                int c = in[i] & 0xff;
                node ^= c;
                if (node < 0 || node >= trie.length) {
                    break;
                }
                int unit = trie[node];
                if (label(unit) != c) {
                    break;
                }
                node ^= offset(unit);
                if (hasLeaf(unit)) {
                    if (results < 32 && node >= 0 && node < trie.length) {
                        int length = i - pos + 1;
                        if (length > longest) {
                            longest = length;
                            value = trie[node] & 0x7fffffff;
                        }
                    }
                    results++;
                }
            }
            if (longest > 0) {
                int end = value;
                while (end < replacements.length && replacements[end] != 0) {
                    end++;
                }
                return new Prefix(replacements, value, end - value, longest);
            }
        }
        int len = validCharLength(in, pos);
        if (len == 0) {
            return new Prefix(REPLACEMENT, 0, REPLACEMENT.length, 1);
        }
        return new Prefix(in, pos, len, len);
    }

    private static boolean hasLeaf(int unit) {
        return ((unit >>> 8) & 1) == 1;
    }

    private static int label(int unit) {
        return unit & (0x80000000 | 0xFF);
    }

    private static int offset(int unit) {
        return (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
    }

    /** The length of the valid UTF-8 character at pos, or 0 when malformed. */
    private static int validCharLength(byte[] in, int pos) {
        int b = in[pos] & 0xff;
        int len = b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
        if (len == 0 || pos + len > in.length) {
            return 0;
        }
        for (int k = 1; k < len; k++) {
            if ((in[pos + k] & 0xC0) != 0x80) {
                return 0;
            }
        }
        return len;
    }

    /** The length of the UTF-8 character starting with byte b (SentencePiece's OneCharLen). */
    private static int oneCharLength(byte b) {
        int hi = (b & 0xff) >>> 4;
        return new int[] {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[hi];
    }

    // -- segmentation -------------------------------------------------------------------------------------------

    private int[] viterbi(byte[] s) {
        int size = s.length;
        if (size == 0) {
            return new int[0];
        }
        float unkScore = minScore - UNK_PENALTY;
        float[] best = new float[size + 1];
        int[] startsAt = new int[size + 1];
        int[] ids = new int[size + 1];
        Arrays.fill(startsAt, -1);
        String text = latin1(s);
        for (int start = 0; start < size; ) {
            float tillHere = best[start];
            boolean single = false;
            int mblen = Math.min(oneCharLength(s[start]), size - start);
            for (int end = start + 1; end <= Math.min(size, start + maxPieceBytes); end++) {
                Integer id = lattice.get(text.substring(start, end));
                if (id == null || pieces.get(id).type() == UNUSED) {
                    continue;
                }
                int length = end - start;
                // SentencePiece's `score` is a double (the type of `user-defined ? length·max − 0.1 : score`), so
                // the candidate is a double sum compared with the stored float and rounded when it is stored
                double score = pieces.get(id).type() == USER_DEFINED ? (double) ((float) length * maxScore) - 0.1
                        : pieces.get(id).score();
                double candidate = score + tillHere;
                if (startsAt[end] == -1 || candidate > best[end]) {
                    best[end] = (float) candidate;
                    startsAt[end] = start;
                    ids[end] = id;
                }
                if (length == mblen) {
                    single = true;
                }
            }
            if (!single) {
                int end = start + mblen;
                float candidate = unkScore + tillHere;
                if (startsAt[end] == -1 || candidate > best[end]) {
                    best[end] = candidate;
                    startsAt[end] = start;
                    ids[end] = unkId;
                }
            }
            start += mblen;
        }
        // the pieces from the end backwards; a run of unknown characters is one <unk>, as
        // SentencePieceProcessor joins consecutive unknown pieces
        int[] reversed = new int[size];
        int count = 0;
        for (int end = size; end > 0; end = startsAt[end]) {
            if (ids[end] == unkId && count > 0 && reversed[count - 1] == unkId) {
                continue;
            }
            reversed[count++] = ids[end];
        }
        int[] out = new int[count];
        for (int i = 0; i < count; i++) {
            out[i] = reversed[count - 1 - i];
        }
        return out;
    }

    private static String latin1(byte[] b) {
        return new String(b, StandardCharsets.ISO_8859_1);
    }

    private static String latin1(byte[] b, int off, int len) {
        return new String(b, off, len, StandardCharsets.ISO_8859_1);
    }
}
