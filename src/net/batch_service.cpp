// The batch tier's glue: records go into the spool, `/gateway/batch/...` is answered by the pure
// batch::answer() over the spool's book (its journal line made durable first), and the runner
// works the spool in the background.

#include "bgw/net/batch_service.hpp"

#include "bgw/batch/api.hpp"
#include "bgw/http/error_response.hpp"
#include "bgw/net/gateway.hpp"

#include <mutex>
#include <utility>

namespace bgw::net {

namespace http = beast::http;

batch_service::batch_service(const config::config& cfg)
    : cfg_(cfg), spool_(cfg_.batch.spool_dir), runner_(cfg_, spool_) {}

result<std::string> batch_service::accept(std::string region,
                                          std::string model,
                                          std::string operation,
                                          std::string input_json,
                                          std::string_view owner) {
    batch::record r;
    r.id = new_request_id();
    r.region = std::move(region);
    r.model = std::move(model);
    r.operation = std::move(operation);
    r.input = std::move(input_json);
    r.accepted_ms = batch_now_ms();
    r.owner = owner;
    std::lock_guard lock(spool_.mutex());
    if (!spool_.append(batch::accept_event(r))) {
        return error{http::status::service_unavailable, "ServiceUnavailableException",
                     "the batch spool cannot be written; the record was not accepted"};
    }
    return r.id;
}

http::response<http::string_body> batch_service::answer(http::verb method,
                                                        std::string_view target,
                                                        std::string_view caller,
                                                        std::string_view request_id) {
    std::lock_guard lock(spool_.mutex());
    auto a = batch::answer(spool_.book(), cfg_.batch, method, target, caller, request_id);
    if (a.event && !spool_.append(a.event->line))
        return bgw::http::make_error_response(a.event->unwritten, request_id);
    return std::move(a.response);
}

std::map<std::string, std::uint64_t> batch_service::record_counts() {
    std::lock_guard lock(spool_.mutex());
    std::map<std::string, std::uint64_t> out;
    for (const auto& [state, n] : spool_.book().count_by_state())
        out.emplace(batch::record_state_name(state), n);
    return out;
}

awaitable<void> batch_service::run(gateway_context& g) { return runner_.run(g); }

}  // namespace bgw::net
