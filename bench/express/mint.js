// Prints an HS256 access token for the Express servers, signed with JWT_SECRET and valid for
// an hour, as the tutorials' sign-in does.
"use strict";

const jwt = require("jsonwebtoken");

const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error("set JWT_SECRET");
  process.exit(64);
}
process.stdout.write(jwt.sign({ sub: "bench" }, secret, { algorithm: "HS256", expiresIn: 3600 }));
