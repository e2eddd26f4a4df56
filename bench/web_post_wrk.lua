-- bench/web_post_wrk.lua: the wrk script of bench/web.lua: POST one job per request.
wrk.method = "POST"
wrk.body = '{"job":"echo","args":{"user":42}}'
wrk.headers["Content-Type"] = "application/json"
