#include "bgw/http/retry_after.hpp"

#include <algorithm>

namespace bgw::http {

retry_after_value retry_after(std::chrono::milliseconds wait) {
    const auto ms = static_cast<std::uint64_t>(std::max<std::int64_t>(1, wait.count()));
    return {std::max<std::uint64_t>(1, (ms + 999) / 1000), ms};
}

}  // namespace bgw::http
