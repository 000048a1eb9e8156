-- bench/token-stream.lua: a wrk script (one thread, -t1) that sends every request with tokens
-- not sent before, read one line at a time from TOKENS_FILE starting at byte TOKENS_OFFSET.
--   a line "MANDATE"             GET  WRK_PATH, Authorization: Mandate MANDATE
--   a line "PAYMENT<TAB>CART"    POST WRK_PATH with body {}, Authorization: Mandate PAYMENT and
--                                Mandate-Cart: CART (bench/mint_carts writes these)
-- The caller moves TOKENS_OFFSET past what a run may have read (answers + connections): a line
-- is never sent twice. When the file runs out, requests go without a token and are refused,
-- which shows as non-2xx answers: such a run is invalid, never silently a cheaper one.
local f
local path

init = function(args)
    path = os.getenv("WRK_PATH") or "/"
    f = assert(io.open(os.getenv("TOKENS_FILE"), "r"))
    f:seek("set", tonumber(os.getenv("TOKENS_OFFSET") or "0"))
end

request = function()
    local line = f:read("*l")
    if not line then
        return wrk.format("GET", path)
    end
    local pay, cart = line:match("^([^\t]+)\t(.+)$")
    if pay then
        return wrk.format("POST", path, {["Authorization"] = "Mandate " .. pay,
                                         ["Mandate-Cart"] = cart,
                                         ["Content-Type"] = "application/json"}, "{}")
    end
    return wrk.format("GET", path, {["Authorization"] = "Mandate " .. line})
end
