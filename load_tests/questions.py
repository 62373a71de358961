"""A Double-11 question mix in Chinese and English: (language, text, weight).

Most questions are simple and high-frequency (the bot answers them); some need a person
(refunds, failed payments, account security, complaints); a few ask for a person outright.
"""

from __future__ import annotations

QUESTIONS: tuple[tuple[str, str, int], ...] = (
    ("zh", "我的快递什么时候到？", 12),
    ("zh", "双十一下单的包裹什么时候发货", 10),
    ("zh", "物流信息三天没更新了", 6),
    ("zh", "优惠券怎么用不了", 8),
    ("zh", "跨店满减怎么算的", 6),
    ("zh", "预售的尾款什么时候付", 7),
    ("zh", "定金可以退吗", 3),
    ("zh", "怎么开发票", 4),
    ("zh", "我想查一下订单状态", 6),
    ("zh", "我要退款，衣服尺码不对", 6),
    ("zh", "退货运费谁出", 3),
    ("zh", "支付失败了但是扣款了", 3),
    ("zh", "我的账号被盗了，有异常登录", 1),
    ("zh", "我要投诉，客服态度太差", 2),
    ("zh", "转人工", 4),
    ("zh", "帮我找客服", 2),
    ("zh", "这个耳机支持降噪吗", 3),
    ("en", "Where is my package?", 4),
    ("en", "When will my order be shipped?", 3),
    ("en", "How do I use a coupon at checkout", 2),
    ("en", "When is the final payment for the pre-sale?", 2),
    ("en", "Can I get an invoice for my order", 1),
    ("en", "I want a refund, the item arrived broken", 2),
    ("en", "My payment failed but I was charged twice", 1),
    ("en", "I think my account was hacked", 1),
    ("en", "This is the worst service, I want to file a complaint", 1),
    ("en", "Let me talk to a real person please", 2),
    ("en", "Does this phone come in blue?", 1),
)
