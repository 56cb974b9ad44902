-- A generated sample shop for the pg_xsell walkthrough (deterministic: setseed).
-- 2,000 customers with hidden shopping personas, 8 categories, 48 products, ~9,000 orders with
-- planted cross-category bundles, plus search queries and reviews for the language-model steps.
-- Re-running rebuilds the schema `shop` from scratch in a few seconds.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;   -- one plan, one random() sequence
DROP SCHEMA IF EXISTS shop CASCADE;
-- The demo database always gets the freshly installed build of the extension.
DROP EXTENSION IF EXISTS pg_xsell CASCADE;
CREATE EXTENSION pg_xsell;
CREATE SCHEMA shop;
SELECT setseed(0.20261203) \gset

CREATE TABLE shop.categories (
  category_id int PRIMARY KEY,
  name        text NOT NULL,
  description text NOT NULL
);
INSERT INTO shop.categories VALUES
  (1, 'electronics', 'phones, headphones, chargers and smart gadgets'),
  (2, 'books',       'novels, cookbooks, travel guides and children''s books'),
  (3, 'kitchen',     'cookware, knives, coffee makers and kitchen tools'),
  (4, 'outdoor',     'camping gear, tents, hiking boots and backpacks'),
  (5, 'fitness',     'running shoes, yoga mats, weights and sports nutrition'),
  (6, 'beauty',      'skin care, cosmetics, perfume and hair care'),
  (7, 'toys',        'toys, board games, puzzles and baby products'),
  (8, 'grocery',     'coffee beans, tea, snacks and pantry staples');

CREATE TABLE shop.products (
  product_id  int PRIMARY KEY,
  category_id int NOT NULL REFERENCES shop.categories,
  name        text NOT NULL,
  price       numeric(10,2) NOT NULL
);
INSERT INTO shop.products VALUES
  (101,1,'wireless earbuds',59.90),(102,1,'phone charger',19.90),(103,1,'smartwatch',149.00),
  (104,1,'bluetooth speaker',79.00),(105,1,'headlamp',24.90),(106,1,'e-reader',129.00),
  (201,2,'crime novel',12.90),(202,2,'italian cookbook',29.90),(203,2,'hiking guide',22.50),
  (204,2,'picture book',9.90),(205,2,'fantasy saga',34.00),(206,2,'marathon training plan',18.00),
  (301,3,'chef knife',89.00),(302,3,'espresso machine',249.00),(303,3,'cast iron pan',45.00),
  (304,3,'knife sharpener',25.00),(305,3,'milk frother',35.00),(306,3,'cutting board',19.50),
  (401,4,'two-person tent',189.00),(402,4,'sleeping bag',99.00),(403,4,'hiking boots',139.00),
  (404,4,'trekking poles',49.00),(405,4,'camping stove',59.00),(406,4,'daypack',69.00),
  (501,5,'running shoes',119.00),(502,5,'yoga mat',29.00),(503,5,'dumbbells',45.00),
  (504,5,'protein powder',39.90),(505,5,'fitness tracker',89.00),(506,5,'running socks',14.90),
  (601,6,'face cream',24.90),(602,6,'shampoo',8.90),(603,6,'perfume',69.00),
  (604,6,'sunscreen',15.90),(605,6,'lip balm',4.90),(606,6,'hair dryer',49.00),
  (701,7,'building blocks',39.90),(702,7,'board game',29.90),(703,7,'jigsaw puzzle',14.90),
  (704,7,'plush bear',19.90),(705,7,'baby monitor',89.00),(706,7,'wooden train',34.90),
  (801,8,'coffee beans',14.90),(802,8,'green tea',7.90),(803,8,'energy bars',12.90),
  (804,8,'olive oil',11.90),(805,8,'dark chocolate',3.90),(806,8,'trail mix',6.90);

-- Hidden personas drive what customers buy (the segmentation should rediscover them).
CREATE TABLE shop.persona_affinity (persona int, category_id int, weight float8);
INSERT INTO shop.persona_affinity VALUES
  -- 0 gadget fans
  (0,1,6),(0,2,1),(0,3,1),(0,4,1),(0,5,1),(0,6,0.5),(0,7,0.5),(0,8,1),
  -- 1 home cooks
  (1,1,0.5),(1,2,2),(1,3,6),(1,4,0.3),(1,5,0.3),(1,6,1),(1,7,0.5),(1,8,4),
  -- 2 outdoor & fitness
  (2,1,1.5),(2,2,1),(2,3,0.5),(2,4,5),(2,5,5),(2,6,0.5),(2,7,0.2),(2,8,1.5),
  -- 3 young families
  (3,1,1),(3,2,2),(3,3,1),(3,4,0.5),(3,5,0.5),(3,6,2),(3,7,6),(3,8,2),
  -- 4 occasional shoppers (spread thin)
  (4,1,1),(4,2,1),(4,3,1),(4,4,1),(4,5,1),(4,6,1),(4,7,1),(4,8,1);
CREATE TEMP TABLE cum AS
SELECT persona, category_id,
       sum(weight) OVER w / sum(weight) OVER (PARTITION BY persona) AS hi,
       (sum(weight) OVER w - weight) / sum(weight) OVER (PARTITION BY persona) AS lo
FROM shop.persona_affinity
WINDOW w AS (PARTITION BY persona ORDER BY category_id);

CREATE TABLE shop.customers (
  customer_id int PRIMARY KEY,
  persona     int NOT NULL,        -- ground truth, for checking the segmentation
  signup_date date NOT NULL
);
INSERT INTO shop.customers
SELECT g, CASE WHEN r < 0.22 THEN 0 WHEN r < 0.44 THEN 1 WHEN r < 0.64 THEN 2 WHEN r < 0.82 THEN 3 ELSE 4 END,
       date '2024-01-01' + (random() * 600)::int
FROM (SELECT g, random() AS r FROM generate_series(1, 2000) g) s;

CREATE TABLE shop.orders (
  order_id    int PRIMARY KEY,
  customer_id int NOT NULL REFERENCES shop.customers,
  order_date  date NOT NULL
);
-- Frequency depends on the persona; occasional shoppers order rarely.
INSERT INTO shop.orders
SELECT row_number() OVER (ORDER BY c.customer_id, k), c.customer_id,
       least(date '2026-11-30', c.signup_date + (random() * (date '2026-11-30' - c.signup_date))::int)
FROM shop.customers c,
     generate_series(1, 1 + (random() * CASE c.persona WHEN 4 THEN 2 WHEN 0 THEN 7 ELSE 6 END)::int) k;

CREATE TABLE shop.order_lines (
  order_id   int NOT NULL REFERENCES shop.orders,
  product_id int NOT NULL REFERENCES shop.products,
  quantity   int NOT NULL,
  unit_price numeric(10,2) NOT NULL
);
-- 1-4 lines per order: a category drawn from the persona's affinity, then a product in it.
INSERT INTO shop.order_lines
SELECT l.order_id, p.product_id, 1 + (random() < 0.2)::int, p.price
FROM (
  SELECT o.order_id, c.persona, random() AS r_cat, random() AS r_prod
  FROM shop.orders o JOIN shop.customers c USING (customer_id),
       generate_series(1, 1 + (random() * 3)::int) s
) l
JOIN cum ON cum.persona = l.persona AND l.r_cat >= cum.lo AND l.r_cat < cum.hi
JOIN LATERAL (
  SELECT product_id, price FROM shop.products pr
  WHERE pr.category_id = cum.category_id
  ORDER BY product_id OFFSET floor(l.r_prod * 6)::int LIMIT 1
) p ON true;

-- Planted cross-category bundles ("bought X, also buys Y"), each with its own probability.
CREATE TEMP TABLE bundles (if_product int, then_product int, p float8);
INSERT INTO bundles VALUES
  (501, 505, 0.55),  -- running shoes -> fitness tracker (fitness -> electronics)
  (501, 206, 0.35),  -- running shoes -> marathon training plan (-> books)
  (202, 301, 0.50),  -- italian cookbook -> chef knife (books -> kitchen)
  (301, 304, 0.60),  -- chef knife -> knife sharpener
  (401, 105, 0.50),  -- tent -> headlamp (outdoor -> electronics)
  (401, 402, 0.45),  -- tent -> sleeping bag
  (302, 801, 0.65),  -- espresso machine -> coffee beans (kitchen -> grocery)
  (705, 704, 0.40),  -- baby monitor -> plush bear
  (403, 806, 0.35);  -- hiking boots -> trail mix (outdoor -> grocery)
INSERT INTO shop.order_lines
SELECT DISTINCT ol.order_id, b.then_product, 1, p.price
FROM shop.order_lines ol
JOIN bundles b ON b.if_product = ol.product_id
JOIN shop.products p ON p.product_id = b.then_product
-- a pseudo-random draw per (order, bundle): random() here would be evaluated once per bundle
WHERE (abs(hashint8(ol.order_id::bigint * 1000 + b.then_product)) % 100000) / 100000.0 < b.p
  AND NOT EXISTS (SELECT 1 FROM shop.order_lines x WHERE x.order_id = ol.order_id AND x.product_id = b.then_product);

-- What customers typed into the search box, and what they wrote in reviews.
CREATE TABLE shop.search_log (search_id serial PRIMARY KEY, customer_id int REFERENCES shop.customers, query text NOT NULL);
INSERT INTO shop.search_log (customer_id, query)
SELECT 1 + (random() * 1999)::int, q FROM unnest(ARRAY[
  'noise cancelling headphones for the train', 'usb-c fast charger', 'waterproof tent for two',
  'trail running shoes size 44', 'gift for a 3 year old', 'best knife for slicing tomatoes',
  'vegan protein shake', 'anti aging night cream', 'beginner yoga set', 'fair trade espresso beans',
  'lightweight sleeping bag for summer', 'wooden toys without plastic', 'sous vide cooker',
  'kindle alternative with backlight', 'sunscreen spf 50 for kids', 'strategy board game for adults'
]) q, generate_series(1, 3);

CREATE TABLE shop.reviews (review_id serial PRIMARY KEY, customer_id int, product_id int, body text NOT NULL);
INSERT INTO shop.reviews (customer_id, product_id, body) VALUES
  (12, 501, 'Great cushioning, I ran my first half marathon in them. Now I need something to track my pace.'),
  (48, 302, 'The espresso is fantastic but the beans I bought were stale. Looking for a better roast.'),
  (77, 401, 'Tent survived a storm in the Alps. It gets really dark at night though.'),
  (150, 705, 'Baby monitor works well, the app is a bit slow. My daughter loves stuffed animals.'),
  (230, 103, 'Battery lasts two days. Would love a charger for the car.'),
  (311, 202, 'Lovely recipes. My old knives can not handle the tomatoes anymore.'),
  (402, 601, 'Skin feels soft. Smell is a bit strong.'),
  (518, 702, 'Fun for the whole family on rainy weekends.');

ANALYZE shop.categories, shop.products, shop.customers, shop.orders, shop.order_lines;
SELECT (SELECT count(*) FROM shop.customers) AS customers,
       (SELECT count(*) FROM shop.orders) AS orders,
       (SELECT count(*) FROM shop.order_lines) AS order_lines;
