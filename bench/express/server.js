// The tutorials' Node/Express + jsonwebtoken resource server, as scripts/bench runs it beside our
// stack: GET /api/persons/:id verifies an HS256 bearer token and reads the person row from the
// same PostgreSQL table resource-service reads, through a `pg` pool.
//
// Environment:
//   PORT          port on 127.0.0.1 (required)
//   DATABASE_URL  the resource-service database (required)
//   JWT_SECRET    the HS256 secret (required)
//   KEY_MODE      `string` (the secret passed as a string on every verify, as the tutorials do)
//                 or `keyobject` (a KeyObject made once with crypto.createSecretKey)
"use strict";

const crypto = require("node:crypto");
const express = require("express");
const jwt = require("jsonwebtoken");
const { Pool } = require("pg");

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;
const mode = process.env.KEY_MODE || "string";
if (!port || !process.env.DATABASE_URL || !secret || !["string", "keyobject"].includes(mode)) {
  console.error("set PORT, DATABASE_URL, JWT_SECRET and KEY_MODE=string|keyobject");
  process.exit(64);
}

// jsonwebtoken turns a string secret into a KeyObject on every call; making it once is the
// variant that shows what that costs.
const key = mode === "keyobject" ? crypto.createSecretKey(Buffer.from(secret)) : secret;
const pool = new Pool({ connectionString: process.env.DATABASE_URL });

function verifyToken(req, res, next) {
  const header = req.headers.authorization || "";
  const token = header.startsWith("Bearer ") ? header.slice(7) : req.headers["x-access-token"];
  if (!token) {
    return res.status(403).send({ message: "No token provided!" });
  }
  jwt.verify(token, key, { algorithms: ["HS256"] }, (err, decoded) => {
    if (err) {
      return res.status(401).send({ message: "Unauthorized!" });
    }
    req.userId = decoded.sub;
    next();
  });
}

const app = express();
app.get("/api/persons/:id", verifyToken, async (req, res) => {
  try {
    const { rows } = await pool.query(
      "SELECT person_id, name, email, age FROM persons WHERE person_id = $1",
      [req.params.id],
    );
    if (rows.length === 0) {
      return res.status(404).send({ message: "Person not found." });
    }
    const p = rows[0];
    res.send({ id: Number(p.person_id), name: p.name, email: p.email, age: p.age });
  } catch (err) {
    res.status(500).send({ message: err.message });
  }
});

const server = app.listen(port, "127.0.0.1", () => {
  console.log(`express (${mode}) listening on 127.0.0.1:${port}`);
});
process.on("SIGTERM", () => {
  server.close();
  pool.end();
});
