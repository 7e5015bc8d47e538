/* tests/compute/test_vector.c: the SIMD f32 vector kernels agree with the
 * scalar ones, and matmul and rope agree with plain loops written here. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/compute.h"
#include "compute/cpu/vector.h"
#include "test_util.h"

static uint64_t rng_state = 12345;

static float random_float(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void fill(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = random_float();
}

/* Relative closeness for sums computed in a different order: f32 rounding of
 * n products grows like sqrt(n) * 2^-24 times the sum of magnitudes. */
static bool close_enough(float actual, float expected, float magnitude)
{
    return fabsf(actual - expected) <= 1e-5f * (magnitude + 1.0f);
}

static const int64_t lengths[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 256, 640, 1000};

static void simd_dot_and_axpy_match_scalar(void)
{
    const vector_kernels *scalar = vector_kernels_for_level(SIMD_SCALAR);
    for (int level = SIMD_AVX2; level <= (int)cpu_simd_level_supported(); level++) {
        const vector_kernels *simd = vector_kernels_for_level((simd_level)level);
        for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
            int64_t n = lengths[i];
            float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
            float *y1 = malloc((size_t)n * sizeof *y1), *y2 = malloc((size_t)n * sizeof *y2);
            fill(a, n);
            fill(b, n);
            fill(y1, n);
            memcpy(y2, y1, (size_t)n * sizeof *y1);
            float magnitude = 0;
            for (int64_t j = 0; j < n; j++)
                magnitude += fabsf(a[j] * b[j]);
            float expected = scalar->dot(a, b, n), actual = simd->dot(a, b, n);
            CHECK_MESSAGE(close_enough(actual, expected, magnitude), "%s dot n=%lld: %g vs %g",
                          simd_level_name((simd_level)level), (long long)n, actual, expected);
            scalar->axpy(y1, 0.37f, a, n);
            simd->axpy(y2, 0.37f, a, n);
            for (int64_t j = 0; j < n; j++)
                CHECK_MESSAGE(fabsf(y1[j] - y2[j]) <= 1e-6f, "%s axpy n=%lld index %lld",
                              simd_level_name((simd_level)level), (long long)n, (long long)j);
            free(a);
            free(b);
            free(y1);
            free(y2);
        }
    }
}

/* SiLU and GELU-tanh through the SIMD exp agree with expf/tanhf written out. */
static void simd_gated_activations_match_the_formulas(void)
{
    enum { N = 1000 };
    float gate[N], up[N], out[N];
    for (int i = 0; i < N; i++) {
        gate[i] = (float)(i - N / 2) / 40.0f; /* -12.5 .. 12.5 */
        up[i] = random_float();
    }
    for (int level = SIMD_SCALAR; level <= (int)cpu_simd_level_supported(); level++) {
        const vector_kernels *kernels = vector_kernels_for_level((simd_level)level);
        for (int gelu = 0; gelu <= 1; gelu++) {
            memcpy(out, gate, sizeof gate);
            if (gelu)
                kernels->gated_sigmoid(out, up, 1.5957691216057308f, 0.044715f, N);
            else
                kernels->gated_sigmoid(out, up, 1.0f, 0.0f, N);
            for (int i = 0; i < N; i++) {
                double g = gate[i], expected;
                if (gelu)
                    expected = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * up[i];
                else
                    expected = g / (1.0 + exp(-g)) * up[i];
                CHECK_MESSAGE(fabs(out[i] - expected) <= 2e-6 * (1.0 + fabs(expected)), "%s %s g=%g: %g vs %g",
                              simd_level_name((simd_level)level), gelu ? "gelu" : "silu", g, out[i], expected);
            }
        }
    }
}

/* compute_matmul with F32 weights equals a triple loop in double, for token
 * counts on both sides of the direct/panel switch, row counts that are not
 * multiples of the panel or the thread split, and with too little scratch
 * for a panel (the direct path must take over). */
static void matmul_matches_plain_loops_with(int64_t scratch_floats)
{
    compute_context *context = NULL;
    strata_error error;
    CHECK(compute_context_create(2, scratch_floats, &context, &error) == STRATA_OK);
    const int64_t shapes[][3] = {{1, 37, 64}, {3, 50, 100}, {4, 16, 32}, {9, 67, 640}, {33, 130, 256},
                                 {64, 40, 96}, {71, 67, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t tokens = shapes[s][0], rows = shapes[s][1], cols = shapes[s][2];
        float *w = malloc((size_t)(rows * cols) * sizeof *w), *x = malloc((size_t)(tokens * cols) * sizeof *x);
        float *y = malloc((size_t)(tokens * rows) * sizeof *y);
        fill(w, rows * cols);
        fill(x, tokens * cols);
        weight_matrix matrix = {.data = w, .type = TENSOR_F32, .rows = rows, .cols = cols,
                                .row_bytes = (uint64_t)cols * 4};
        compute_matmul(context, &matrix, x, tokens, y);
        int reported = 0;
        for (int64_t t = 0; t < tokens; t++)
            for (int64_t r = 0; r < rows && reported < 5; r++) {
                double expected = 0;
                for (int64_t c = 0; c < cols; c++)
                    expected += (double)w[r * cols + c] * x[t * cols + c];
                bool ok = fabs(y[t * rows + r] - expected) <= 1e-4 * (1 + fabs(expected));
                reported += !ok; /* report a few, not thousands */
                CHECK_MESSAGE(ok, "shape %zu t=%lld r=%lld: %g vs %g", s, (long long)t, (long long)r,
                              y[t * rows + r], expected);
            }
        free(w);
        free(x);
        free(y);
    }
    compute_context_destroy(context);
}

static void matmul_matches_plain_loops(void)
{
    matmul_matches_plain_loops_with((PANEL_ROWS + 1) * 640);
}

static void matmul_without_panel_scratch_matches_plain_loops(void)
{
    matmul_matches_plain_loops_with(16);
}

/* NORM rope on a head equals NEOX rope on the same head with pairs regrouped. */
static void rope_styles_agree_under_pair_regrouping(void)
{
    enum { DIM = 16 };
    float norm[DIM], neox[DIM];
    fill(norm, DIM);
    for (int i = 0; i < DIM / 2; i++) {
        neox[i] = norm[2 * i];
        neox[i + DIM / 2] = norm[2 * i + 1];
    }
    int64_t position = 7;
    rope_params params = {.style = ROPE_NORM, .rotated_dims = DIM, .base = 10000, .frequency_scale = 1};
    compute_rope(norm, 1, 1, DIM, DIM, &position, &params);
    params.style = ROPE_NEOX;
    compute_rope(neox, 1, 1, DIM, DIM, &position, &params);
    for (int i = 0; i < DIM / 2; i++) {
        CHECK(fabsf(neox[i] - norm[2 * i]) < 1e-6f);
        CHECK(fabsf(neox[i + DIM / 2] - norm[2 * i + 1]) < 1e-6f);
    }
    /* Position 0 is the identity, and a rotation keeps each pair's length. */
    float x[DIM], original[DIM];
    fill(x, DIM);
    memcpy(original, x, sizeof x);
    position = 0;
    compute_rope(x, 1, 1, DIM, DIM, &position, &params);
    CHECK(memcmp(x, original, sizeof x) == 0);
}

int main(void)
{
    fprintf(stderr, "SIMD levels tested against scalar: up to %s\n", simd_level_name(cpu_simd_level_supported()));
    RUN_CASE(simd_dot_and_axpy_match_scalar);
    RUN_CASE(simd_gated_activations_match_the_formulas);
    RUN_CASE(matmul_matches_plain_loops);
    RUN_CASE(matmul_without_panel_scratch_matches_plain_loops);
    RUN_CASE(rope_styles_agree_under_pair_regrouping);
    TEST_EXIT();
}
