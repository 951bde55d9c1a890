// Renders a chat template with llama.cpp's own Jinja engine (common/jinja),
// the way common_chat_template_direct_apply_impl feeds it, for the golden
// test of wgllm's runtime/chat. Usage: render TEMPLATE CONTEXT.json EPOCH
#include <fstream>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include "jinja/runtime.h"
#include "jinja/parser.h"
#include "jinja/lexer.h"
int main(int argc, char ** argv) {
    std::ifstream tf(argv[1]); std::stringstream ts; ts << tf.rdbuf();
    std::ifstream cf(argv[2]); nlohmann::ordered_json inp = nlohmann::ordered_json::parse(cf);
    jinja::lexer lexer;
    auto lr = lexer.tokenize(ts.str());
    auto prog = jinja::parse_from_tokens(lr);
    jinja::context ctx(lr.source);
    ctx.current_time = std::stoll(argv[3]);
    jinja::global_from_json(ctx, inp, false);
    jinja::runtime rt(ctx);
    const jinja::value results = rt.execute(prog);
    auto parts = jinja::runtime::gather_string_parts(results);
    std::cout << parts->as_string().str();
}
