#include "bgw/error.hpp"

#include <stdexcept>

namespace bgw {

void throw_exception_from_error(const error& e, const boost::source_location&) {
    throw std::logic_error("result::value() on error: " + e.type + ": " + e.message);
}

}  // namespace bgw
