/*
 * Parity of the model engine with PyTorch (python3-torch through
 * /usr/bin/python3 running tests/torch_ref.py): from the same weights
 * and batch, the loss and every gradient agree to a relative error under
 * 1e-4, SGD with momentum and weight decay follows torch.optim.SGD, and
 * model files made on either side predict the same on 1,000 MNIST test
 * images on the other. Skipped (with a message) only when torch is
 * missing.
 */
#include "idx.h"
#include "nn.h"
#include "test_util.h"

#include <sys/wait.h>

#define PYTHON "/usr/bin/python3"
#define BATCH 64
#define NPRED 1000

static mnist_t mnist;
static char script[1024];

/* Run torch_ref.py with args; returns its exit status. */
static int run_ref(const char *args)
{
    char cmd[4096];
    int st;

    snprintf(cmd, sizeof(cmd), "%s %s %s", PYTHON, script, args);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* max |a - b| / max |b|: the error relative to the tensor's scale. */
static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 1e-30;

    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / den;
}

/* Each weight and bias tensor of a and b (same layer list) close. */
static void check_tensors_close(const float *a, const nn_model_t *ref,
                                double tol)
{
    const float *b = nn_model_params_const(ref);
    int nl;
    const nn_layer_spec_t *l = nn_model_layers(ref, &nl);
    size_t at = 0;

    for (int i = 0; i < nl; i++) {
        size_t k2 = l[i].kind == NN_CONV2D ? (size_t)l[i].k * l[i].k : 1;
        size_t nw = (size_t)l[i].in * l[i].out * k2;

        if (l[i].kind != NN_CONV2D && l[i].kind != NN_LINEAR)
            continue;
        double ew = rel_err(a + at, b + at, nw);
        double eb = rel_err(a + at + nw, b + at + nw, (size_t)l[i].out);

        printf("  %s: weight rel err %.2e, bias rel err %.2e\n", l[i].name,
               ew, eb);
        CHECK(ew < tol);
        CHECK(eb < tol);
        at += nw + (size_t)l[i].out;
    }
    CHECK_EQ(at, nn_model_nparams(ref));
}

static void save_batch(const char *img, const char *lab, size_t from,
                       size_t n, int test)
{
    uint32_t dims[3] = {0, 28, 28};
    const idx_file_t *im = test ? &mnist.test_images : &mnist.train_images;
    const idx_file_t *lb = test ? &mnist.test_labels : &mnist.train_labels;
    dadc_error_t err;

    CHECK_EQ(idx_save(img, im->data + from * 784, n, dims, 3, &err), 0);
    if (lab != NULL)
        CHECK_EQ(idx_save(lab, lb->data + from, n, dims, 1, &err), 0);
}

static void test_gradients_and_sgd(void)
{
    nn_model_t *m, *g, *after;
    nn_trainer_t *t;
    nn_train_opts_t o;
    nn_meta_t meta;
    dadc_error_t err;
    double loss;
    char args[2048];

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 7);
    CHECK_EQ(nn_model_save(m, NULL, test_path("init.safetensors"), &err), 0);
    save_batch(test_path("b.idx"), test_path("l.idx"), 0, BATCH, 0);
    snprintf(args, sizeof(args),
             "grads %s %s %s %s --steps 3 --lr 0.05 --momentum 0.9 "
             "--wd 0.001",
             test_path("init.safetensors"), test_path("b.idx"),
             test_path("l.idx"), test_path("grads.safetensors"));
    CHECK_EQ(run_ref(args), 0);

    /* one step from the same weights: loss and gradients */
    nn_train_opts_default(&o);
    o.batch = BATCH;
    o.lr = 0.05;
    o.momentum = 0.9;
    o.weight_decay = 0.001;
    CHECK_EQ(nn_trainer_create(&t, m, &o, 2), 0);
    nn_trainer_set_dropout(t, 0);
    CHECK_EQ(nn_trainer_step(t, mnist.train_images.data,
                             mnist.train_labels.data, BATCH, &loss),
             0);
    CHECK_EQ(nn_model_load(test_path("grads.safetensors"), &g, &meta, &err),
             0);
    printf("  loss: ours %.9f, torch %s\n", loss, nn_meta_get(&meta, "loss"));
    CHECK(fabs(loss - atof(nn_meta_get(&meta, "loss"))) / loss < 1e-4);
    check_tensors_close(nn_trainer_grads(t), g, 1e-4);

    /* two more steps: parameters as torch.optim.SGD leaves them */
    for (int s = 0; s < 2; s++)
        CHECK_EQ(nn_trainer_step(t, mnist.train_images.data,
                                 mnist.train_labels.data, BATCH, &loss),
                 0);
    snprintf(args, sizeof(args), "%s.sgd", test_path("grads.safetensors"));
    CHECK_EQ(nn_model_load(args, &after, NULL, &err), 0);
    check_tensors_close(nn_model_params_const(m), after, 1e-4);

    nn_trainer_free(t);
    nn_model_free(after);
    nn_model_free(g);
    nn_model_free(m);
}

/* Compare our predictions of NPRED test images with torch's. */
static void check_predictions(const nn_model_t *m, const char *torch_pred)
{
    size_t len;
    float *theirs = (float *)test_read_file(torch_pred, &len);
    float *ours = malloc(sizeof(float) * NPRED * NN_CLASSES);
    nn_ctx_t *ctx;
    int same = 0;
    double maxdiff = 0.0;

    CHECK_EQ(len, sizeof(float) * NPRED * NN_CLASSES);
    CHECK_EQ(nn_ctx_create(&ctx, m, 100), 0);
    CHECK_EQ(nn_predict(ctx, m, mnist.test_images.data, NPRED, ours), 0);
    for (int i = 0; i < NPRED; i++) {
        float p[NN_CLASSES];

        for (int j = 0; j < NN_CLASSES; j++) {
            p[j] = expf(theirs[i * NN_CLASSES + j]);
            maxdiff = fmax(maxdiff, fabs(p[j] - ours[i * NN_CLASSES + j]));
        }
        same += nn_argmax(p) == nn_argmax(ours + i * NN_CLASSES);
    }
    printf("  %d/%d identical predictions, max probability diff %.2e\n",
           same, NPRED, maxdiff);
    CHECK_EQ(same, NPRED);
    CHECK(maxdiff < 1e-4);
    nn_ctx_free(ctx);
    free(ours);
    free(theirs);
}

static void test_our_model_in_torch(void)
{
    nn_model_t *m;
    nn_train_opts_t o;
    nn_train_result_t res;
    dadc_error_t err;
    char args[2048];

    CHECK_EQ(nn_model_create_reference(&m), 0);
    nn_model_init(m, 3);
    nn_train_opts_default(&o);
    o.epochs = 1;
    CHECK_EQ(nn_train(m, mnist.train_images.data, mnist.train_labels.data,
                      4096, &o, &res, &err),
             0);
    CHECK_EQ(nn_model_save(m, NULL, test_path("ours.safetensors"), &err), 0);
    save_batch(test_path("test.idx"), NULL, 0, NPRED, 1);
    snprintf(args, sizeof(args), "predict %s %s %s",
             test_path("ours.safetensors"), test_path("test.idx"),
             test_path("ours.pred"));
    CHECK_EQ(run_ref(args), 0);
    check_predictions(m, test_path("ours.pred"));
    nn_model_free(m);
}

static void test_torch_model_here(void)
{
    nn_model_t *m;
    nn_meta_t meta;
    dadc_error_t err;
    char args[2048];

    save_batch(test_path("tr.idx"), test_path("trl.idx"), 0, 6400, 0);
    save_batch(test_path("test.idx"), NULL, 0, NPRED, 1);
    snprintf(args, sizeof(args), "make %s %s %s %s %s --seed 5 --steps 100",
             test_path("torch.safetensors"), test_path("torch.pred"),
             test_path("tr.idx"), test_path("trl.idx"),
             test_path("test.idx"));
    CHECK_EQ(run_ref(args), 0);
    CHECK_EQ(nn_model_load(test_path("torch.safetensors"), &m, &meta, &err),
             0);
    CHECK_STR(nn_meta_get(&meta, "data"), "torch_ref.py");
    check_predictions(m, test_path("torch.pred"));
    nn_model_free(m);
}

int main(void)
{
    const char *src = getenv("DADC_SOURCE_DIR");
    const char *dir;
    dadc_error_t err;

    test_init("test_nn_torch", 600);
    dir = test_mnist_dir();
    CHECK(dir != NULL);
    CHECK_EQ(mnist_load(dir, &mnist, &err), 0);
    snprintf(script, sizeof(script), "%s/tests/torch_ref.py",
             src ? src : ".");
    if (run_ref("2>/dev/null") == 3) {
        printf("SKIP: python3-torch is not installed for %s; "
               "install it (apt-get install python3-torch) to run the "
               "parity tests\n",
               PYTHON);
        mnist_free(&mnist);
        return test_finish();
    }
    TEST_RUN(test_gradients_and_sgd);
    TEST_RUN(test_our_model_in_torch);
    TEST_RUN(test_torch_model_here);
    mnist_free(&mnist);
    return test_finish();
}
