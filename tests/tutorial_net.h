/* tutorial_net.h - the Keras CIFAR-10 tutorial's network (examples/cifar10_cnn.c's
   build_network, which the example keeps whole as its lesson), for the tests and
   benchmarks that build it: include after cnn.h. */
#ifndef TUTORIAL_NET_H
#define TUTORIAL_NET_H

/* Its layers on input "input" h x w x c, with `classes` softmax units and Dropout
   at `dropout`: the output node, not yet set as the model's output. */
static cnn_node *tutorial_layers(cnn_model *m, int h, int w, int c, int classes, float dropout) {
    cnn_node *x = cnn_input(m, h, w, c, "input");
    x = cnn_conv2d(m, x, .filters = 64, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv_1");
    x = cnn_batch_norm(m, x, .name = "batch_norm_1");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_1");
    x = cnn_conv2d(m, x, .filters = 32, .kernel_size = {3, 3}, .activation = CNN_RELU, .name = "conv_2");
    x = cnn_batch_norm(m, x, .name = "batch_norm_2");
    x = cnn_max_pool2d(m, x, .pool_size = {2, 2}, .name = "pool_2");
    x = cnn_flatten(m, x, .name = "flatten");
    x = cnn_dense(m, x, .units = 512, .activation = CNN_RELU, .name = "fc1");
    x = cnn_dropout(m, x, .rate = dropout, .name = "dropout1");
    x = cnn_dense(m, x, .units = 256, .activation = CNN_RELU, .name = "fc2");
    x = cnn_dropout(m, x, .rate = dropout, .name = "dropout2");
    return cnn_dense(m, x, .units = classes, .activation = CNN_SOFTMAX, .name = "softmax");
}

#endif
